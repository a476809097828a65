"""The live channel: the notification goes to the user's open WebSocket connections on
any hub process (CONTRACT §4 `notification` frame). It is also always in the inbox, so a
user with no open connection finds it there."""

from __future__ import annotations

from domain.delivery import Channel, Message, Sent


class WebSocketChannel(Channel):
    name = "websocket"

    def __init__(self, realtime) -> None:
        self.realtime = realtime

    async def send(self, message: Message) -> Sent:
        notification = {"id": message.notification_id, "type": message.type, "title": message.content["title"],
                        "body": message.content["body"], "data": message.data, "priority": message.priority,
                        "created_at": message.created_at}
        # Published once per notification: a retried dispatch does not show it twice.
        seq = await self.realtime.publish_notification(message.user_id, notification)
        return Sent(provider_id=f"seq:{seq}" if seq else None)
