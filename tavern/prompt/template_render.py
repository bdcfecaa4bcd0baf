"""Rendering a compiled sandbox template under the limits, within a wall-clock deadline.

Who calls it: :class:`tavern.prompt.templates.PromptFormat` and the story strings of
:mod:`tavern.prompt.st_presets` render with :func:`render_template`; any failure is one
:class:`~tavern.errors.TemplateError` line (a :class:`TemplateRefused` when the template itself
rejected the conversation).

The per-step checks (:mod:`tavern.prompt.template_guards`) bound what one step can cost; the
wall clock is enforced from outside: a foreign template (a GGUF's, a server's) renders on a
worker thread and the caller stops waiting at ``MAX_SECONDS``. A thread, not a process:
templates render on every turn (tens of microseconds each) and a process would add pickling and
a round trip to each, plus a start per app run; a thread cannot be killed, but the abandoned
render stops at its next step (every step checks a cancel flag and the clock), within one
bounded step. Tavern's own templates (bundled, and those built from SillyTavern presets, whose
user text is only data) render on the caller's thread without the hand-off, still under every
limit and the per-step clock. A template that ran into the clock or the step limit is
remembered, so the next renders of it (``select_format`` tries dozens) fail at once instead of
each taking the whole limit again.
"""

from __future__ import annotations

import queue
import threading
import weakref

import jinja2
from jinja2.exceptions import SecurityError

from tavern.errors import TemplateError
from tavern.prompt import template_guards as guards
from tavern.prompt.template_guards import BUDGET, Budget, LimitReached
from tavern.prompt.template_sandbox import one_line


class TemplateRefused(TemplateError):
    """The template itself rejected the conversation (``raise_exception``, or a value it needs
    is missing), as opposed to being broken or hostile."""


# Templates that ran into the clock or the step limit, with the limits then and the reason.
_POISONED: weakref.WeakKeyDictionary[jinja2.Template, tuple[tuple[int, float], str]] = (
    weakref.WeakKeyDictionary()
)
_POISON_LOCK = threading.Lock()


class _RenderJob:
    """One render handed to a worker thread; the caller waits on ``done`` (a queue: a third of
    the hand-off cost of an Event)."""

    __slots__ = ("budget", "done", "error", "label", "result", "template", "variables")

    def __init__(self, template: jinja2.Template, label: str, variables: dict[str, object]) -> None:
        self.template = template
        self.label = label
        self.variables = variables
        self.budget = Budget(_input_chars(variables))
        self.done: queue.SimpleQueue[bool] = queue.SimpleQueue()
        self.result: str | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = _render_here(self.template, self.label, self.variables, self.budget)
        except BaseException as err:  # noqa: BLE001 - handed to the caller, which raises it
            self.error = err
        finally:
            self.done.put(True)


class _RenderThreads:
    """Daemon threads that run renders. A render that overruns keeps its thread until it
    notices the cancel flag; the next render gets another thread, so one stuck render never
    delays the others."""

    _MAX_IDLE = 4

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_RenderJob] = queue.SimpleQueue()
        self._idle = 0
        self._lock = threading.Lock()

    def submit(self, job: _RenderJob) -> None:
        with self._lock:
            spawn = self._idle == 0
            if not spawn:
                self._idle -= 1  # that idle thread takes this job
        self._jobs.put(job)
        if spawn:
            threading.Thread(target=self._serve, name="tavern-template", daemon=True).start()

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            job.run()
            if job.budget.cancelled:
                return  # its caller is gone; the thread is not trusted with more work
            with self._lock:
                if self._idle >= self._MAX_IDLE:
                    return
                self._idle += 1


_THREADS = _RenderThreads()


def _input_chars(variables: dict[str, object]) -> int:
    """Characters of chat text handed to a render (its message contents and string variables;
    names and roles are short)."""
    total = sum(len(v) for v in variables.values() if isinstance(v, str))
    messages = variables.get("messages")
    if isinstance(messages, list):
        for m in messages:
            content = m.get("content") if isinstance(m, dict) else None
            if isinstance(content, str):
                total += len(content)
    return total


def _limits() -> tuple[int, float]:
    return (guards.MAX_STEPS, guards.MAX_SECONDS)


def _poison(template: jinja2.Template, reason: str) -> None:
    with _POISON_LOCK:
        _POISONED[template] = (_limits(), reason)


def render_template(
    template: jinja2.Template, label: str, variables: dict[str, object], *, trusted: bool = False
) -> str:
    """Render a compiled sandbox template under the limits; errors become one TemplateError line.

    The render runs on a worker thread, and at ``MAX_SECONDS`` this returns the error whatever
    the render is doing; ``trusted`` (Tavern's own template text) renders on this thread,
    stopped by the per-step clock instead (see the module docstring)."""
    with _POISON_LOCK:
        poisoned = _POISONED.get(template)
    if poisoned is not None and poisoned[0] == _limits():
        raise TemplateError(f"{label}: stopped: {poisoned[1]} (on an earlier render)")
    if trusted:  # no hand-off: a render of a bundled format is tens of microseconds
        return _render_here(template, label, variables, Budget(_input_chars(variables)))
    job = _RenderJob(template, label, variables)
    _THREADS.submit(job)
    try:
        job.done.get(timeout=guards.MAX_SECONDS)
    except queue.Empty:
        job.budget.cancelled = True
        reason = f"template ran longer than {guards.MAX_SECONDS:g} s"
        _poison(template, reason)
        raise TemplateError(f"{label}: stopped: {reason}")
    if job.error is not None:
        raise job.error
    assert job.result is not None
    return job.result


def _render_here(template: jinja2.Template, label: str, variables: dict[str, object], budget: Budget) -> str:
    """The render itself, on this thread, under ``budget``."""
    token = BUDGET.set(budget)
    try:
        out: list[str] = []
        size = 0
        for chunk in template.generate(**variables):
            size += len(chunk)
            if size > guards.MAX_OUTPUT:
                raise LimitReached(f"template output is over {guards.MAX_OUTPUT} characters")
            out.append(chunk)
        return "".join(out)
    except LimitReached as err:
        reason = one_line(str(err))
        if err.poisons:
            _poison(template, reason)
        raise TemplateError(f"{label}: stopped: {reason}") from None
    except SecurityError as err:
        raise TemplateError(f"{label}: blocked unsafe operation: {one_line(str(err))}") from None
    except jinja2.UndefinedError as err:
        raise TemplateRefused(f"{label}: undefined value: {one_line(str(err))}") from None
    except jinja2.TemplateError as err:
        # raise_exception() from the template itself lands here.
        raise TemplateRefused(f"{label}: template refused the conversation: {one_line(str(err))}") from None
    except RecursionError:
        raise TemplateError(f"{label}: stopped: template recursed too deeply") from None
    except MemoryError:
        raise TemplateError(f"{label}: stopped: template ran out of memory") from None
    except Exception as err:  # noqa: BLE001 - a template error of any Python type
        raise TemplateError(f"{label}: render failed: {type(err).__name__}: {one_line(str(err))}") from None
    finally:
        BUDGET.reset(token)
