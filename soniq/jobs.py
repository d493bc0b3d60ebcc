"""What ``@app.job`` registers, and what handlers see: JobContext, Snooze, TaskRef."""

from __future__ import annotations

import inspect
import json
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from pydantic import BaseModel, ValidationError

from soniq.errors import TASK_ARGS_INVALID, TASK_INVALID, SoniqError
from soniq.retry import RetryPolicy
from soniq.settings import NAME_RE, QUEUE_RE

if TYPE_CHECKING:
    from soniq.app import Soniq

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class JobContext:
    """What a handler may know about the job it runs (declare a parameter of this type)."""

    job_id: str
    job_name: str
    queue: str
    attempt: int
    max_attempts: int
    worker_id: str | None
    scheduled_at: datetime | None
    created_at: datetime | None
    _control: Any = field(default=None, repr=False, compare=False)  # soniq.control.JobControl
    parent_results: dict[str, Any] = field(default_factory=dict)
    """Each parent's result (``after=``/workflows), keyed by the parent's step name when it
    has one, else by its job id; ``{}`` for a job without parents."""

    @property
    def cancel_requested(self) -> bool:
        """True once ``cancel_job(id, abort=True)`` asked this job to stop (sync handlers
        check it; async handlers are cancelled)."""
        return self._control is not None and bool(self._control.cancel_requested)

    async def set_progress(self, fraction: float, message: str | None = None) -> None:
        """Record progress (0..1, and a short message); writes are coalesced to about ten a
        second per job and the last value always lands. Bad fraction:
        ``SONIQ_PROGRESS_INVALID``."""
        if self._control is None:
            raise SoniqError(TASK_INVALID, "set_progress works only inside a running job")
        await self._control.set_progress(fraction, message)

    async def complete(self, conn: Any, result: Any = None) -> None:
        """Mark this job ``done`` (with ``result``) inside ``conn``'s open transaction, so it
        is done exactly when the handler's writes commit. ``SONIQ_JOB_LOST`` when this worker
        no longer owns the job: let it roll the transaction back."""
        if self._control is None:
            raise SoniqError(TASK_INVALID, "complete works only inside a running job")
        await self._control.complete(conn, result)


@dataclass(frozen=True)
class Snooze:
    """Return this from a handler to run the job again after ``seconds``, spending no attempt."""

    seconds: float
    reason: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.seconds, (int, float)) or self.seconds < 0:
            raise SoniqError(TASK_INVALID, "Snooze(seconds) must be a number >= 0")


@dataclass(frozen=True)
class TaskRef:
    """A task known by name only, for producers that do not import its handler."""

    name: str
    args_model: type[BaseModel] | None = None
    default_queue: str | None = None


def task_ref(
    name: str, *, args_model: type[BaseModel] | None = None, default_queue: str | None = None
) -> TaskRef:
    """Refer to a task by name: ``await app.enqueue(task_ref("emails.send"), args={...})``."""
    check_name(name)
    if default_queue is not None:
        check_queue(default_queue, TASK_INVALID)
    return TaskRef(name, args_model, default_queue)


def check_name(name: str) -> None:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise SoniqError(
            TASK_INVALID,
            f"task name {name!r} is invalid: it must match {NAME_RE.pattern} "
            "(start with a letter or _, then letters, digits, _ . : -; at most 200 characters)",
        )


def check_queue(queue: object, code: str) -> str:
    if not isinstance(queue, str) or not QUEUE_RE.match(queue):
        raise SoniqError(
            code,
            f"queue name {queue!r} is invalid: use letters, digits, _ . : - "
            f"(pattern {QUEUE_RE.pattern})",
        )
    return queue


def dump_json(value: Any, what: str, code: str = TASK_ARGS_INVALID) -> str:
    """Strict JSON text of ``value``: no NaN/inf, no datetimes, sets, bytes or objects."""
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise SoniqError(
            code,
            f"{what} must be plain JSON (dict, list, str, int, float, bool, None): {exc}. "
            "Convert datetimes to ISO strings, Decimals to str, sets to lists, bytes to base64.",
        ) from None


def _context_params(fn: Callable[..., Any]) -> tuple[str, ...]:
    """Names of the parameters annotated ``JobContext`` (string annotations too)."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        hints = {}
    names = []
    for pname, param in inspect.signature(fn).parameters.items():
        ann = hints.get(pname, param.annotation)
        if ann is JobContext or (isinstance(ann, str) and ann.split(".")[-1] == "JobContext"):
            names.append(pname)
    return tuple(names)


@dataclass
class Task(Generic[P, R]):
    """A registered handler and its options."""

    name: str
    fn: Callable[P, R]
    queue: str
    priority: int | None
    retries: int | None
    retry: RetryPolicy
    timeout: float | None
    unique: bool
    validate: type[BaseModel] | None
    is_async: bool
    context_params: tuple[str, ...]
    accepts_kwargs: bool = False
    param_names: frozenset[str] = field(default_factory=frozenset)
    required_params: frozenset[str] = field(default_factory=frozenset)
    retry_on: tuple[type[BaseException], ...] | None = None
    no_retry_on: tuple[type[BaseException], ...] | None = None
    expires_after: float | None = None
    max_concurrency: int | None = None  # flow control (soniq.limits)
    max_concurrency_per_key: int | None = None
    rate_limits: tuple[Any, ...] = ()  # soniq.limits.RateLimit
    window: Any = None  # soniq.windows.ExecutionWindow

    def retryable(self, exc: object) -> bool:
        """False when ``exc`` (a failed attempt's exception) must not be retried."""
        if not isinstance(exc, BaseException):
            return True
        if self.no_retry_on and isinstance(exc, self.no_retry_on):
            return False
        return self.retry_on is None or isinstance(exc, self.retry_on)

    @classmethod
    def create(
        cls,
        fn: Callable[P, R],
        *,
        name: str | None,
        queue: str,
        priority: int | None,
        retries: int | None,
        retry_delay: float | list[float] | tuple[float, ...],
        retry_backoff: bool,
        retry_max_delay: float | None,
        retry_jitter: bool,
        timeout: float | None,
        unique: bool,
        validate: type[BaseModel] | None,
        retry_on: Any = None,
        no_retry_on: Any = None,
        expires_after: Any = None,
    ) -> Task[P, R]:
        if not callable(fn):
            raise SoniqError(TASK_INVALID, "@app.job(...) must decorate a function")
        if name is None:
            # handlers defined inside a function: "mod.outer.inner", not "mod.outer.<locals>.inner"
            qualname = getattr(fn, "__qualname__", fn.__name__).replace("<locals>.", "")
            task_name = f"{fn.__module__}.{qualname}"
        else:
            task_name = name
        check_name(task_name)
        check_queue(queue, TASK_INVALID)
        if retries is not None and (not isinstance(retries, int) or retries < 0):
            raise SoniqError(TASK_INVALID, f"retries for {task_name} must be an integer >= 0")
        if timeout is not None and timeout <= 0:
            raise SoniqError(TASK_INVALID, f"timeout for {task_name} must be > 0 seconds")
        if priority is not None and not isinstance(priority, int):
            raise SoniqError(TASK_INVALID, f"priority for {task_name} must be an integer")
        if validate is not None and not (
            isinstance(validate, type) and issubclass(validate, BaseModel)
        ):
            raise SoniqError(TASK_INVALID, f"validate= for {task_name} must be a pydantic model")
        if expires_after is not None and (
            isinstance(expires_after, bool)
            or not isinstance(expires_after, (int, float))
            or not 0 < expires_after < float("inf")
        ):
            raise SoniqError(
                TASK_INVALID, f"expires_after for {task_name} must be a number of seconds > 0"
            )
        params = inspect.signature(fn).parameters
        context_params = _context_params(fn)
        return cls(
            name=task_name,
            fn=fn,
            queue=queue,
            priority=priority,
            retries=retries,
            retry=RetryPolicy.build(retry_delay, retry_backoff, retry_max_delay, retry_jitter),
            timeout=timeout,
            unique=unique,
            validate=validate,
            is_async=inspect.iscoroutinefunction(fn),
            context_params=context_params,
            accepts_kwargs=any(p.kind is p.VAR_KEYWORD for p in params.values()),
            param_names=frozenset(params),
            required_params=frozenset(
                n
                for n, p in params.items()
                if p.default is p.empty
                and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                and n not in context_params
            ),
            retry_on=_exception_classes(retry_on, "retry_on", task_name),
            no_retry_on=_exception_classes(no_retry_on, "no_retry_on", task_name),
            expires_after=None if expires_after is None else float(expires_after),
        )

    def check_args(self, args: dict[str, Any]) -> dict[str, Any]:
        """Validate arguments with ``validate=`` (if set); returns what the handler gets."""
        if self.validate is None:
            return args
        try:
            model = self.validate.model_validate(args)
        except ValidationError as exc:
            raise SoniqError(
                TASK_ARGS_INVALID,
                f"arguments for {self.name} were rejected by {self.validate.__name__}: "
                f"{_short_errors(exc)}. Fix the arguments passed to enqueue.",
            ) from None
        return model.model_dump(mode="json")


def _exception_classes(
    value: Any, option: str, task_name: str
) -> tuple[type[BaseException], ...] | None:
    """``retry_on=`` / ``no_retry_on=`` as a tuple of exception classes (one class is taken
    as a tuple of one); anything else is refused."""
    if value is None:
        return None
    items = (value,) if isinstance(value, type) else value
    if not isinstance(items, (tuple, list)) or not all(
        isinstance(c, type) and issubclass(c, BaseException) for c in items
    ):
        raise SoniqError(
            TASK_INVALID,
            f"{option} for {task_name} must be a tuple of exception classes, "
            f"e.g. {option}=(ConnectionError, TimeoutError); got {value!r}",
        )
    return tuple(items)


def check_model_args(model: type[BaseModel], args: dict[str, Any], name: str) -> dict[str, Any]:
    try:
        return model.model_validate(args).model_dump(mode="json")
    except ValidationError as exc:
        raise SoniqError(
            TASK_ARGS_INVALID,
            f"arguments for {name} were rejected by {model.__name__}: {_short_errors(exc)}. "
            "Fix the arguments passed to enqueue.",
        ) from None


def _short_errors(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'args'}: {e['msg']}" for e in exc.errors()
    )


def attach(fn: Callable[P, R], task: Task[P, R], app: Soniq) -> Callable[P, R]:
    """Mark ``fn`` as the handler of ``task`` and give it ``.enqueue(**kwargs)``."""

    async def enqueue(**kwargs: Any) -> str:
        return await app.enqueue(fn, **kwargs)

    fn.__soniq_task__ = task  # type: ignore[attr-defined]
    fn.__soniq_app__ = app  # type: ignore[attr-defined]
    fn.enqueue = enqueue  # type: ignore[attr-defined]
    return fn


# hooks and middleware: async callables the worker awaits around a handler
Hook = Callable[..., Awaitable[Any]]
