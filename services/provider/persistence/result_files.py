"""Reading a stored result file for a consumer (GetComputeResult, DownloadAssetFile).

One reader thread per download reads the file from storage while the event
loop sends what was already read, at most READ_AHEAD chunks ahead, so the
storage read and the gRPC send overlap with bounded memory and one thread
hand-over per chunk.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Iterator

from plumbing import storage

# gRPC message payload: as big as a consumer with default channel options
# accepts (4 MiB per message), less room for the file's entry (its path and
# location are under PATH_MAX). Each chunk costs both ends a fixed ~0.1 ms (thread
# hand-over, wake-ups, one gRPC message): from 2 MiB to this the provider
# went from 0.60 to 0.51 CPU-s per GiB sent, the consumer from 0.45 to 0.39.
RESULT_CHUNK = (4 << 20) - (64 << 10)
# Chunks read ahead of the one being sent: a download holds about
# (READ_AHEAD + 1) * RESULT_CHUNK bytes (12 MiB); 3 was no faster than 2.
READ_AHEAD = 2


def _settle(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)


async def stream_chunks(
    store: storage.ObjectStore, location: str, offset: int
) -> AsyncGenerator[tuple[bytes, int], None]:
    """Yields (data, offset) chunks of a stored file from `offset`.

    A storage error is raised here, where the consumer is; closing the
    generator stops the reader and waits for it to release the storage
    response.
    """
    loop = asyncio.get_running_loop()
    ready: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()  # None: the end of the file
    free_slots = threading.Semaphore(READ_AHEAD)
    stopped = threading.Event()
    reader_done = loop.create_future()

    def hand_over(item: bytes | BaseException | None) -> None:
        loop.call_soon_threadsafe(ready.put_nowait, item)

    def read_ahead() -> None:
        try:
            chunks: Iterator[bytes] = store.read(location, offset, RESULT_CHUNK)
            try:
                while free_slots.acquire() and not stopped.is_set():  # room for one more chunk
                    data = next(chunks, None)
                    hand_over(data)
                    if data is None:
                        break
            finally:
                close = getattr(chunks, "close", None)
                if close:
                    close()
        except BaseException as exc:  # noqa: BLE001 - raised again in the consumer's task
            hand_over(exc)
        finally:
            loop.call_soon_threadsafe(_settle, reader_done)

    threading.Thread(target=read_ahead, name="result-read-ahead", daemon=True).start()
    try:
        while (item := await ready.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            free_slots.release()
            yield item, offset
            offset += len(item)
    finally:
        stopped.set()
        free_slots.release()  # wakes the reader if it waits for room
        await reader_done
