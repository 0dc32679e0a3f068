"""The pipelined worker: read | decode + resize | model | encode | write, overlapped.

Inside each Ray actor or annotate process. I/O threads read with many requests in
flight (object stores answer in 20-100 ms); CPU threads decode and resize (OpenCV and
Pillow release the GIL); the model runs batches on the calling (main) thread, so a GPU
only ever waits for the model; CPU threads encode maps and the stored image; one writer
thread hands samples to the writer in input order. With no CPU threads (a worker with one
core and no GPU) decode and encode run on the model thread, reads still ahead. A bound on
samples in flight keeps memory flat. Each stage calls the same :class:`~pipeline.worker.Worker` and writer
methods as :meth:`Pipeline.run_serial`, so both give the same bytes.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from typing import Any

from pipeline.caption import input_source
from pipeline.reader import read_sample
from pipeline.result import Result
from pipeline.sample_ref import SampleRef
from pipeline.worker import Worker
from pipeline.writers import Sample, Writer


class Pipeline:
    """Runs samples through a Worker into a Writer, pipelined (``run``) or in series (``run_serial``)."""

    def __init__(self, worker: Worker, *, cpu_threads: int = 1, io_threads: int = 16,
                 batch_size: int = 8, serial: bool = False) -> None:  # fmt: skip
        self.worker, self.batch_size, self.serial = worker, batch_size, serial
        self.cpu_threads, self.io_threads = max(0, cpu_threads), max(1, io_threads)
        #: decode + encode threads; None: on the model thread (one core, nothing to overlap with)
        self.cpu = (ThreadPoolExecutor(self.cpu_threads, thread_name_prefix="hintset-cpu")
                    if self.cpu_threads else None)  # fmt: skip
        self.io = ThreadPoolExecutor(self.io_threads, thread_name_prefix="hintset-io")
        #: samples read, decoded or waiting for the model at most (plus one batch downstream)
        self.window = self.io_threads + 2 * batch_size + 2 * self.cpu_threads

    # -- the per-sample steps, shared by both modes ------------------------------------
    def read(self, ref: SampleRef) -> Sample:
        """Read one sample; a failure becomes a failed result."""
        sample = Sample(ref)
        start = time.perf_counter()
        if ref.error:  # the source already knows this input is bad (e.g. a broken tar)
            stage, _, reason = ref.error.partition(": ")
            sample.result = Result(key=ref.key).fail(stage, reason)
            return sample
        try:
            sample.data, sample.caption = read_sample(ref)
        except Exception as err:  # noqa: BLE001 - one unreadable input never stops the unit
            sample.result = Result(key=ref.key).fail("read", _os_reason(err))
        else:
            sample.caption = sample.caption if sample.caption is not None else ref.caption
            sample.caption_source = input_source(sample.caption)
        sample.read_seconds = time.perf_counter() - start
        return sample

    def decode(self, sample: Sample) -> Sample:
        """Decode, filter and resize (skipped when the read failed)."""
        if sample.result is None:
            sample.result = self.worker.prepare(sample.ref.key, sample.data)
        sample.result.timings["read"] = sample.read_seconds
        return sample

    def model(self, batch: list[Sample]) -> None:
        """The model step: every annotator over the batch, then captions where wanted."""
        self.worker.run_models([s.result for s in batch])
        if self.worker.captions is not None:
            filled = self.worker.captions.fill([s.result for s in batch],
                                               [s.caption for s in batch])  # fmt: skip
            for sample, (caption, source) in zip(batch, filled, strict=True):
                sample.caption, sample.caption_source = caption, source

    def encode(self, sample: Sample, writer: Writer) -> Sample:
        """Encode maps, then whatever the writer stores beside them (the image, metadata)."""
        result = self.worker.encode(sample.result)
        if result.status == "ok":
            try:
                writer.encode(sample)
            except Exception as err:  # noqa: BLE001
                result.fail("encode", err)
        result.image = None  # pixels are not needed once encoded; keeps memory flat
        return sample

    # -- serial design: one thread, one stage after the other ----------------------------
    def run_serial(self, refs: Iterable[SampleRef], writer: Writer,
                   on_sample: Callable[[Sample], None] | None = None) -> Any:  # fmt: skip
        """Read, decode, annotate, encode and write batch after batch on this thread."""
        refs = iter(refs)
        while batch := list(islice(refs, self.batch_size)):
            samples = [self.decode(self.read(ref)) for ref in batch]
            self.model(samples)
            for sample in samples:
                self._write(writer, self.encode(sample, writer), on_sample)
        return writer.close()

    # -- pipelined design ----------------------------------------------------------------
    def run(self, refs: Iterable[SampleRef], writer: Writer,
            on_sample: Callable[[Sample], None] | None = None) -> Any:  # fmt: skip
        """Process ``refs`` into ``writer`` with the stages overlapped; return ``writer.close()``."""
        try:
            if self.serial:
                return self.run_serial(refs, writer, on_sample)
            return self._run(refs, writer, on_sample)
        except BaseException:
            writer.abort()
            raise

    def _run(self, refs: Iterable[SampleRef], writer: Writer,
             on_sample: Callable[[Sample], None] | None) -> Any:  # fmt: skip
        slots = threading.Semaphore(self.window)
        stop = threading.Event()
        decoded: queue.Queue = queue.Queue()  # Future[Sample] in input order, then _END
        encoded: queue.Queue = queue.Queue(maxsize=2 * self.batch_size)
        errors: list[BaseException] = []
        feeder = threading.Thread(target=self._feed, name="hintset-feed",
                                  args=(iter(refs), slots, stop, decoded), daemon=True)  # fmt: skip
        write = threading.Thread(target=self._write_loop, name="hintset-write",
                                 args=(encoded, writer, slots, on_sample, errors), daemon=True)  # fmt: skip
        feeder.start()
        write.start()
        try:
            finished = False
            while not finished and not errors:
                batch: list[Sample] = []
                while len(batch) < self.batch_size:
                    item = decoded.get()
                    if item is _END:
                        finished = True
                        break
                    sample = item.result()  # raises what the ref iterator raised
                    batch.append(sample if self.cpu else self.decode(sample))
                if batch:
                    self.model(batch)  # the model: this thread
                    for sample in batch:
                        encoded.put(self.cpu.submit(self.encode, sample, writer) if self.cpu
                                    else _now(self.encode, sample, writer))  # fmt: skip
        finally:
            stop.set()
            for _ in range(self.window):  # wake a feeder blocked on a full window
                slots.release()
            encoded.put(_END)
            write.join()
            feeder.join()
        if errors:
            raise errors[0]
        return writer.close()

    def _feed(self, refs: Iterator[SampleRef], slots: threading.Semaphore,
              stop: threading.Event, decoded: queue.Queue) -> None:  # fmt: skip
        """Pull refs (a unit's iterator may itself read, e.g. stream a tar) and start reads."""
        try:
            for ref in refs:
                slots.acquire()
                if stop.is_set():
                    break
                decoded.put(self._start(ref))
        except BaseException as err:  # noqa: BLE001 - handed to the model loop, which raises it
            failed: Future = Future()
            failed.set_exception(err)
            decoded.put(failed)
        decoded.put(_END)

    def _start(self, ref: SampleRef) -> Future:
        """Read on an I/O thread, then decode on a CPU thread; a future of the decoded sample
        (of the read sample when there are no CPU threads: the model thread decodes it)."""
        if self.cpu is None:
            return self.io.submit(self.read, ref)
        cpu = self.cpu
        done: Future = Future()

        def decode(sample: Sample) -> None:
            try:
                done.set_result(self.decode(sample))
            except BaseException as err:  # noqa: BLE001
                done.set_exception(err)

        def after_read(read: Future) -> None:
            try:
                cpu.submit(decode, read.result())
            except BaseException as err:  # noqa: BLE001 - pool shut down
                done.set_exception(err)

        self.io.submit(self.read, ref).add_done_callback(after_read)
        return done

    def _write_loop(self, encoded: queue.Queue, writer: Writer, slots: threading.Semaphore,
                    on_sample: Callable[[Sample], None] | None,
                    errors: list[BaseException]) -> None:  # fmt: skip
        """Write encoded samples in input order; after an error keep draining, write nothing."""
        while (item := encoded.get()) is not _END:
            try:
                sample = item.result()
                if not errors:
                    self._write(writer, sample, on_sample)
            except BaseException as err:  # noqa: BLE001 - raised by run() on the main thread
                errors.append(err)
            slots.release()

    @staticmethod
    def _write(writer: Writer, sample: Sample, on_sample: Callable[[Sample], None] | None) -> None:
        writer.write(sample)
        if on_sample:
            on_sample(sample)

    def close(self) -> None:
        """Stop the thread pools."""
        if self.cpu:
            self.cpu.shutdown(wait=True)
        self.io.shutdown(wait=True)


_END = object()


def _now(fn: Callable[..., Any], *args: Any) -> Future:
    """Call ``fn`` on this thread; its result or exception in a finished future."""
    done: Future = Future()
    try:
        done.set_result(fn(*args))
    except BaseException as err:  # noqa: BLE001 - raised where the future is read
        done.set_exception(err)
    return done


def _os_reason(err: BaseException) -> str | BaseException:
    """``No such file or directory: 'x'`` for OSErrors, the exception otherwise."""
    if isinstance(err, OSError) and err.strerror:
        return f"{err.strerror}: {err.filename}" if err.filename else err.strerror
    return err
