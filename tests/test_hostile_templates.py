"""Admin templates of every dangerous kind: refused at PUT with 422 `invalid_template` and
the reason (nothing saved), each followed by a normal notification that must arrive. A
template that passes the trial on sample data but fails on a real message falls back to
the shipped default, is counted, and holds up nothing."""

from __future__ import annotations

import asyncio
import time

import pytest

from domain.template_sandbox import BoundedSandbox, render_bounded
from tests.conftest import SERVICE_KEY


TYPE = "promo"
DANGEROUS = {
    "power tower": "{{ 9 ** 999999 }}",
    "huge constant": "{{ " + "9" * 4000 + " }}",
    "constant past Python's digit limit": "{{ " + "9" * 5000 + " }}",
    "huge repetition": "{{ 'x' * 1000000000 }}",
    "repeated references": "{% set a = 'x' * 50000 %}{{ [a] * 100000 }}",
    "padding filter": "{{ 'x'|center(1000000000) }}",
    "padding method": "{{ 'x'.ljust(1000000000) }}",
    "wide %-format": "{{ '%999999999d' % 1 }}",
    "wide str.format": "{{ '{:>999999999}'.format(1) }}",
    "wide format filter": "{{ '%999999999s'|format('x') }}",
    "huge range": "{% for i in range(100000000) %}{% endfor %}",
    "nested loops": "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
    "doubling": "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "doubling block": "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set t %}{{ ns.s }}{{ ns.s }}"
                      "{% endset %}{% set ns.s = t %}{% endfor %}",
    "replace bomb": "{{ ('a' * 10000)|replace('a', 'b' * 10000) }}",
    "join bomb": "{{ range(10000)|join('x' * 10000) }}",
    "runaway output": "{% for i in range(10000) %}{{ 'x' * 1000 }}{% endfor %}",
    "recursion": "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    "division by zero": "{{ 1 / 0 }}",
    "unknown filter": "{{ title|no_such_filter }}",
    "sandbox escape": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "lorem ipsum": "{{ lipsum(100000) }}",
    "deep nesting": "{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}",
}


async def put_template(api, admin, title: str, body: str = "{{ body }}", channel: str = "websocket"):
    return await api.call("PUT", f"/api/v1/templates/{TYPE}/{channel}", {"title": title, "body": body}, token=admin)


async def notify(api, user_id: str, title: str, **data):
    r = await api.call("POST", "/api/v1/notifications", {
        "user_id": user_id, "type": TYPE, "title": title, "body": "b", "channels": ["websocket"],
        **({"data": data} if data else {})}, headers={"X-API-Key": SERVICE_KEY})
    assert r.status == 202, r
    return r.data["id"]


async def inbox_item(api, token: str, nid: str, timeout: float = 10.0) -> dict:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        r = await api.call("GET", "/api/v1/users/me/notifications", token=token)
        found = [i for i in r.data["items"] if i["id"] == nid]
        if found or loop.time() >= deadline:
            assert found, f"notification {nid} never arrived"
            return found[0]
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("kind", list(DANGEROUS))
async def test_a_dangerous_template_is_refused_and_the_next_notification_arrives(api, kind):
    admin = await api.admin_token()
    user = await api.register()
    started = time.monotonic()
    r = await put_template(api, admin, DANGEROUS[kind])
    assert time.monotonic() - started < 5, "the trial render ran away"
    assert r.status == 422 and r.error_code == "invalid_template", (kind, r)
    [detail] = r.data["error"]["details"]
    assert detail["field"] == "title" and detail["message"].startswith("invalid template"), detail
    # Nothing was saved: the shipped default is still in use.
    r = await api.call("GET", f"/api/v1/templates/{TYPE}/websocket", token=admin)
    assert r.data["source"] == "default", r.data

    nid = await notify(api, user["user"]["id"], "Hello after the attack")
    item = await inbox_item(api, user["access_token"], nid)
    assert item["title"] == "Hello after the attack"


async def test_a_template_failing_on_real_data_falls_back_to_the_default_and_is_counted(api):
    admin = await api.admin_token()
    user = await api.register()
    token, user_id = user["access_token"], user["user"]["id"]
    # Fine on the sample data it is tried on; not on what the next message carries.
    r = await put_template(api, admin, "{{ title }}{{ 'x' * (data.repeat or 1) }}",
                           "{% for i in range(data.n or 1) %}{% for j in range(data.n or 1) %}{% endfor %}{% endfor %}"
                           "{{ body }}")
    assert r.status == 200, r
    before = await template_failures(api)

    bad = await notify(api, user_id, "Big", repeat=10**7, n=10_000)
    good = await notify(api, user_id, "Small", repeat=2)
    item = await inbox_item(api, token, bad)
    assert item["title"] == "Big" and item["body"] == "b"  # the shipped default: {{ title }} / {{ body }}
    assert (await inbox_item(api, token, good))["title"] == "Smallxx"  # the override, where it works
    assert await template_failures(api) >= before + 1


async def template_failures(api) -> float:
    r = await api.call("GET", "/metrics")
    return sum(float(line.rsplit(" ", 1)[1]) for line in str(r.data).splitlines()
               if line.startswith('hub_template_failures_total{channel="websocket"}'))


# The sandbox itself -----------------------------------------------------------------------

ENV = BoundedSandbox(autoescape=False)


@pytest.mark.parametrize("kind", list(DANGEROUS))
def test_the_sandbox_bounds_time_and_memory(kind):
    import resource

    from jinja2 import TemplateError

    started = time.monotonic()
    with pytest.raises(TemplateError):
        render_bounded(ENV.compile_template(DANGEROUS[kind]), {})
    assert time.monotonic() - started < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss < 600 * 1024  # KiB: no gigabyte was ever made


def test_ordinary_templates_still_work():
    source = ("{{ user.name|title }}: {{ data.items_count * 2 }} × {{ '%.2f'|format(data.total|float) }} "
              "{% for tag in data.tags %}{{ tag|upper }}{{ ', ' if not loop.last }}{% endfor %} "
              "{{ ('ab' ~ 'cd')|center(8) }} {{ data.tags|join('/') }} {{ 2 ** 10 }} {{ range(3)|list }}")
    out = render_bounded(ENV.compile_template(source), {"user": {"name": "ann"},
                                                   "data": {"items_count": 3, "total": "12.5", "tags": ["a", "b"]}})
    assert out == "Ann: 6 × 12.50 A, B   abcd   a/b 1024 [0, 1, 2]"
