"""One-click unsubscribe (RFC 8058; CONTRACT v2 §5): the link in a marketing email's
`List-Unsubscribe` header. A POST turns that category off for the user's email without
signing in; a GET (a person clicking the link, or a mail scanner following it) only shows
a page with the button, so that following a link never changes anything by itself."""

from __future__ import annotations

import html

from domain.errors import Forbidden
from domain.notification_policy import CATEGORIES
from handlers.base import BaseHandler

_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Unsubscribe</title></head>
<body style="font-family: sans-serif; max-width: 480px; margin: 3em auto">
<h1 style="font-size: 20px">Stop {category} emails?</h1>
<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">
<button type="submit">Unsubscribe</button></form></body></html>"""


class UnsubscribeHandler(BaseHandler):
    openapi = {
        "post": {"summary": "One-click unsubscribe (RFC 8058): ?u=<user>&c=<category>&s=<signature> from the "
                            "List-Unsubscribe link turns that category off for the user's email", "auth": None},
        "get": {"summary": "The unsubscribe link opened in a browser: a page with the button (changes nothing)",
                "auth": None},
    }

    def _link(self) -> tuple[str, str]:
        user_id, category, signature = (self.get_query_argument(name, "") for name in ("u", "c", "s"))
        if (category not in CATEGORIES or not user_id or len(user_id) > 64 or len(signature) > 100
                or not self.services.unsubscribe_links.verify(user_id, category, signature)):
            raise Forbidden("This unsubscribe link is not valid.", code="invalid_signature")
        return user_id, category

    async def get(self) -> None:
        _, category = self._link()
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(_PAGE.format(category=html.escape(category)))

    async def post(self) -> None:
        user_id, category = self._link()
        await self.services.accounts.unsubscribe(user_id, "email", category)
        self.send({"unsubscribed": True, "category": category, "channel": "email"})
