"""Cost of rendering notification templates under the bounded sandbox
(domain/template_sandbox.py) against Jinja's plain ImmutableSandboxedEnvironment, on the
shipped templates of every type and channel, and how long a runaway template holds the
event loop before its budget stops it.

Usage: `.venv/bin/python bench/template_render.py [-n 2000]`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jinja2 import ChainableUndefined, TemplateError  # noqa: E402
from jinja2.sandbox import ImmutableSandboxedEnvironment  # noqa: E402

from domain.notification_templates import DEFAULTS, PARTS, SAMPLE_CONTEXT, default_parts  # noqa: E402
from domain.template_sandbox import BoundedSandbox, render_bounded  # noqa: E402


def sources() -> list[tuple[bool, str]]:
    return [(name == "html", source) for kind in DEFAULTS for channel in PARTS
            for name, source in default_parts(kind, channel).items()]


def per_render_us(env, render, n: int) -> float:
    compiled = [(env[html].from_string(source)) for html, source in sources()]
    context = dict(SAMPLE_CONTEXT, rendered_title="Title", rendered_body="Body")
    started = time.perf_counter()
    for _ in range(n):
        for template in compiled:
            render(template, context)
    return (time.perf_counter() - started) / (n * len(compiled)) * 1e6


def main(args) -> None:
    plain = {h: ImmutableSandboxedEnvironment(autoescape=h, undefined=ChainableUndefined) for h in (False, True)}
    bounded = {h: BoundedSandbox(autoescape=h, undefined=ChainableUndefined) for h in (False, True)}
    print(f"{len(sources())} shipped template parts, rendered {args.n} times each")
    base = per_render_us(plain, lambda t, c: t.render(c), args.n)
    ours = per_render_us(bounded, render_bounded, args.n)
    print(f"plain sandbox:   {base:7.1f} µs per part")
    print(f"bounded sandbox: {ours:7.1f} µs per part ({ours / base:.2f}x)")
    for name, source in (("nested loops", "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}"
                                          "{% endfor %}"),
                         ("doubling", "{% set ns = namespace(s='x') %}{% for i in range(64) %}"
                                      "{% set ns.s = ns.s ~ ns.s %}{% endfor %}")):
        started = time.perf_counter()
        try:
            render_bounded(bounded[False].from_string(source), {})
        except TemplateError as exc:
            print(f"{name}: stopped after {(time.perf_counter() - started) * 1000:.0f} ms ({exc.message})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=2000)
    main(parser.parse_args())
