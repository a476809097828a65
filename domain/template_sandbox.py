"""A Jinja2 sandbox with a budget, for templates an admin saves.

Jinja's own sandbox keeps templates away from Python internals, but not from the CPU or
memory: `{{ 9**9**9**9 }}` is folded while compiling, `{{ 'x' * 10**9 }}` or
`{{ 'x'|center(10**9) }}` allocate a gigabyte, nested loops over `range` run for hours.
Here, on top of it:

- integer constants and results are kept under MAX_INT_BITS; `**`, `*`, `+` and `%` are
  checked before they run (which also stops their folding at compile time);
- every text a template builds (`~`, repetition, concatenation, filters and string methods
  that pad, join, replace or format) is kept under MAX_TEXT_CHARS, checked before it is
  made where it could be large; the whole output under the same bound;
- every loop iteration and every call is a step: at most MAX_STEPS per render, and the
  render stops once it has run BUDGET_S;
- `range` gives at most MAX_RANGE items; `lipsum` is gone.

Anything refused raises jinja2's SecurityError (a TemplateError) from `render_bounded`;
the caller then uses its fallback.
"""

from __future__ import annotations

import contextvars
import re
import time
import types
from typing import Any

from jinja2 import nodes, pass_eval_context
from jinja2.compiler import CodeGenerator
from jinja2.exceptions import SecurityError, TemplateError, TemplateRuntimeError, TemplateSyntaxError
from jinja2.filters import FILTERS
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_TEXT_CHARS = 100_000  # any one text a template makes, and its whole output
MAX_INT_BITS = 4096  # about 1,200 decimal digits
MAX_STEPS = 100_000  # loop iterations and calls in one render
MAX_RANGE = 10_000
BUDGET_S = 0.25  # wall time of one render
# A width or precision of five digits or more (or `*`) in a %-format or a str.format spec.
_WIDE_FORMAT = re.compile(r"%[-#0 +]*(\*|\d{5,})|%[-#0 +]*\d*\.(\*|\d{5,})|\{[^{}]*:[^{}]*\d{5,}[^{}]*\}")
_TICK = "__template_step__"
_CHECK = "__template_checked__"


class BudgetExceeded(SecurityError):
    """Too many steps or too long: as costly again on the next message."""


class _Budget:
    __slots__ = ("steps", "deadline")

    def __init__(self) -> None:
        self.steps = 0
        self.deadline = time.monotonic() + BUDGET_S


_budget: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("template_budget", default=None)


def _step() -> None:
    budget = _budget.get()
    if budget is None:
        return  # compiling (constant folding): nothing runs long there, every operator is checked
    budget.steps += 1
    if budget.steps > MAX_STEPS:
        raise BudgetExceeded(f"the template takes more than {MAX_STEPS} steps (loop iterations and calls)")
    if time.monotonic() > budget.deadline:
        raise BudgetExceeded(f"the template took longer than {BUDGET_S}s to render")


def _weight(value: Any) -> int:
    """Characters and items in a text, a list, a tuple or a dict's values, all the way down
    (counting stops once past the bound): what turning it into text would cost at least."""
    total, stack = 0, [value]
    while stack and total <= MAX_TEXT_CHARS:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, (list, tuple, dict)):
            total += len(item)
            stack.extend(item.values() if isinstance(item, dict) else item)
    return total


def _text(value: Any) -> Any:
    if _weight(value) > MAX_TEXT_CHARS:
        raise SecurityError(f"the template makes a text or list longer than {MAX_TEXT_CHARS}")
    return value


def _int(value: Any) -> Any:
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise SecurityError(f"the template makes a number larger than {MAX_INT_BITS} bits")
    return value


def _check_binop(operator: str, left: Any, right: Any) -> None:
    ints = isinstance(left, int) and isinstance(right, int)
    if operator == "**" and ints and abs(left) > 1 and right > 0 \
            and left.bit_length() * right > MAX_INT_BITS:
        raise SecurityError(f"the template makes a number larger than {MAX_INT_BITS} bits")
    if operator == "*" and ints:
        if left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise SecurityError(f"the template makes a number larger than {MAX_INT_BITS} bits")
    elif operator == "*":
        count = right if isinstance(right, int) else left if isinstance(left, int) else 1
        if max(_weight(left), _weight(right)) * max(count, 0) > MAX_TEXT_CHARS:
            raise SecurityError(f"the template makes a text or list longer than {MAX_TEXT_CHARS}")
    if _weight(left) + _weight(right) > MAX_TEXT_CHARS:
        raise SecurityError(f"the template makes a text or list longer than {MAX_TEXT_CHARS}")
    if operator == "%" and isinstance(left, str) and _WIDE_FORMAT.search(left):
        raise SecurityError("the template formats with a width or precision of five digits or more")


def _check_width(*numbers: Any) -> None:
    if any(isinstance(n, int) and n > MAX_TEXT_CHARS for n in numbers):
        raise SecurityError(f"the template pads or wraps to more than {MAX_TEXT_CHARS} characters")


def _check_str_method(name: str, text: str, args: tuple, kwargs: dict) -> None:
    if name in ("center", "ljust", "rjust", "zfill", "expandtabs"):
        _check_width(*args, *kwargs.values())
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        _check_replace(text, args[0], args[1])
    elif name == "join" and args:
        _check_join(text, args[0])


def _check_replace(text: str, old: str, new: str) -> None:
    occurrences = text.count(old) if old else len(text) + 1
    if len(text) + occurrences * len(new) > MAX_TEXT_CHARS:
        raise SecurityError(f"the template makes a text longer than {MAX_TEXT_CHARS}")


def _check_join(separator: Any, items: Any) -> None:
    count = len(items) if isinstance(items, (list, tuple, dict, str)) else 0
    if len(str(separator)) * count > MAX_TEXT_CHARS:
        raise SecurityError(f"the template makes a text longer than {MAX_TEXT_CHARS}")


def _bounded_filters() -> dict:
    """Jinja's filters: arguments and result of each within bounds, and those that pad,
    wrap, format, replace or join checked before they run."""

    def center(value, width=80):
        _check_width(width)

    def indent(s, width=4, first=False, blank=False):
        size = width if isinstance(width, int) else len(str(width))
        _check_width(size * (str(s).count("\n") + 1))

    def wordwrap(environment, s, width=79, *args, **kwargs):
        _check_width(width)

    def format_(value, *args, **kwargs):
        if isinstance(value, str) and _WIDE_FORMAT.search(value):
            raise SecurityError("the template formats with a width or precision of five digits or more")

    def replace(eval_ctx, s, old, new, count=None):
        _check_replace(str(s), str(old), str(new))

    checks = {"center": center, "indent": indent, "wordwrap": wordwrap, "format": format_, "replace": replace}

    def bounded(original, check):
        def run(*args, **kwargs):
            _step()
            for arg in (*args, *kwargs.values()):
                _text(arg)
            if check is not None:
                check(*args, **kwargs)
            return _text(_int(original(*args, **kwargs)))

        if hasattr(original, "jinja_pass_arg"):  # keeps pass_context / pass_eval_context / ...
            run.jinja_pass_arg = original.jinja_pass_arg
        return run

    filters = {name: bounded(original, checks.get(name)) for name, original in FILTERS.items()}
    bounded_join = filters["join"]

    @pass_eval_context
    def join(eval_ctx, value, d="", attribute=None):
        items = _text(list(value))  # materialized first: a generator's length is known only then
        _check_join(d, items)
        return bounded_join(eval_ctx, items, d, attribute)

    filters["join"] = join
    return filters


def _bounded_range(*args: int) -> range:
    _step()
    result = range(*args)
    if len(result) > MAX_RANGE:
        raise SecurityError(f"range() gives more than {MAX_RANGE} items")
    return result


def _bounded_concat(parts) -> str:
    """Output of a template, a macro or a block: joined only while it stays in bounds."""
    collected, size = [], 0
    for part in parts:
        size += len(part)
        if size > MAX_TEXT_CHARS:
            raise SecurityError(f"the template's output is longer than {MAX_TEXT_CHARS} characters")
        collected.append(part)
    return "".join(collected)


class _BoundedCodeGenerator(CodeGenerator):
    def visit_Concat(self, node: nodes.Concat, frame) -> None:
        # `a ~ b ~ ...`: the joined text is checked (the parts were, see BoundedSandbox._parse)
        self.write("environment.bounded_text(")
        super().visit_Concat(node, frame)
        self.write(")")


class BoundedSandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"**", "*", "+", "%"})
    code_generator_class = _BoundedCodeGenerator
    concat = staticmethod(_bounded_concat)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.filters = _bounded_filters()
        self.globals.pop("lipsum", None)
        self.globals["range"] = _bounded_range
        self.globals[_TICK] = _step
        self.globals[_CHECK] = _text
        self.finalize = _text  # every {{ ... }} before it becomes text

    @staticmethod
    def bounded_text(value: Any) -> Any:
        return _text(value)

    def compile_template(self, source: str):
        """from_string, with every failure a TemplateError: the template's fault."""
        try:
            return self.from_string(source)
        except TemplateError:
            raise
        except Exception as exc:  # an integer literal past Python's digit limit, nesting past the recursion limit
            raise TemplateSyntaxError(f"{type(exc).__name__}: {exc}", 1) from None

    def _parse(self, source, name, filename):
        """Refuses huge constants, and makes every loop iteration a step."""
        tree = super()._parse(source, name, filename)
        for const in tree.find_all(nodes.Const):
            _int(const.value)
            _text(const.value)
        for loop in tree.find_all(nodes.For):
            tick = nodes.ExprStmt(nodes.Call(nodes.Name(_TICK, "load"), [], [], None, None), lineno=loop.lineno)
            tick.set_environment(self)
            loop.body.insert(0, tick)
        for concat in tree.find_all(nodes.Concat):  # each part checked before it becomes text
            concat.nodes = [nodes.Call(nodes.Name(_CHECK, "load"), [part], [], None, None, lineno=part.lineno)
                            .set_environment(self) for part in concat.nodes]
        return tree

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        _check_binop(operator, left, right)
        return _text(_int(self.binop_table[operator](left, right)))

    def call(__self, __context, __obj, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 (Jinja's signature)
        _step()
        for arg in (*args, *kwargs.values()):
            _text(arg)
        if isinstance(__obj, types.BuiltinMethodType) and isinstance(getattr(__obj, "__self__", None), str):
            _check_str_method(__obj.__name__, __obj.__self__, args, kwargs)
        return _text(_int(super().call(__context, __obj, *args, **kwargs)))

    def wrap_str_format(self, value: Any):
        wrapped = super().wrap_str_format(value)
        if wrapped is not None and _WIDE_FORMAT.search(value.__self__):
            raise SecurityError("the template formats with a width or precision of five digits or more")
        return wrapped


def render_bounded(template, context: dict) -> str:
    """Renders a template of a BoundedSandbox within the budget. Any failure is a
    TemplateError (SecurityError when over the budget)."""
    token = _budget.set(_Budget())
    try:
        return template.render(context)
    except TemplateError:
        raise
    except Exception as exc:  # 1/0, abs('x'), a macro calling itself: the template's fault
        raise TemplateRuntimeError(f"{type(exc).__name__}: {exc}") from None
    finally:
        _budget.reset(token)
