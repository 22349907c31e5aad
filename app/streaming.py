"""The one bridge from async doors to the model's blocking work: each step in a worker thread, and a caller
that goes away (an HTTP client hanging up, Gradio's cancel) cancels the job, which frees the model at its
next token. Every door that awaits the model (the Gradio API, the JSON API, streaming or not) goes through here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import AsyncIterator, Callable, Iterator, TypeVar

import anyio
from starlette.requests import Request

from .gate import Job

log = logging.getLogger(__name__)

T = TypeVar("T")
_END = object()


async def steps_of(steps: Iterator[T], job: Job) -> AsyncIterator[T]:
    """Each value of steps, computed in a worker thread; leaving early (or being cancelled) cancels the job."""
    try:
        while (value := await anyio.to_thread.run_sync(next, steps, _END, abandon_on_cancel=True)) is not _END:
            yield value
    finally:
        # Not steps.close(): an abandoned worker may still be inside next(). Cancelling the job ends the
        # generation at its next token and takes the job out of line, whichever thread holds it.
        job.cancel()


async def result_of(work: Callable[[], T], job: Job, client: Request | None = None) -> T:
    """work() run in a worker thread; cancelled (and the job with it) if the task is cancelled or client hangs up."""
    watcher = asyncio.ensure_future(cancel_on_disconnect(client, job)) if client is not None else None
    try:
        return await anyio.to_thread.run_sync(work, abandon_on_cancel=True)
    finally:
        job.cancel()  # a no-op for a finished job
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


async def cancel_on_disconnect(client: Request, job: Job) -> None:
    """Cancel job when client hangs up; a plain (non-streaming) response hears of it only by reading."""
    while (await client.receive())["type"] != "http.disconnect":
        pass
    log.info("client of %s went away: cancelling its job", client.url.path)
    job.cancel()
