"""Everything that crosses between the run's processes, built so that no death can wedge another.

multiprocessing's Queue, Lock, Condition and Event rest on shared semaphores. A process killed
while it holds one, or while it sleeps in a Condition, leaves it held or counted as a sleeper for
good, and the next process to wait on it waits forever: a reader killed while idle once hung the
main process in `Event.set()`. Nothing here uses one, so nothing can leak one either:

- `Outbox` / `Inbox`: each child's messages to the main process go down the child's own pipe,
  framed. The main process reads without blocking, so a message cut short by a death is seen (end
  of file after part of a frame), never waited for.
- `ClipChannel`: clips from readers to device workers as whole messages on a SEQPACKET socket,
  each delivered whole or not at all. Tensors travel in shared memory, as torch shares them.

The shared memory and the block counter are in `snactok.engine.state`.
"""

from __future__ import annotations

import io
import os
import pickle
import queue
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass
from multiprocessing.reduction import DupFd
from typing import Any

from snactok.engine.hook import armed, reached
from snactok.engine.state import Board, Budget, RunFlag


class ClipChannel:
    """Readers -> device workers, many to many: each message one SEQPACKET datagram.

    A datagram arrives whole or not at all, whoever dies, so no receiver can be left reading half
    a message, and there is no lock. A message's tensors (a clip's wave), and the message itself
    when it is big, go in a memfd whose descriptor travels in the same datagram (SCM_RIGHTS).
    torch's own sharing sent each storage's descriptor through the sender's resource-sharer
    thread, a socket connection per tensor, which cost about half a dry run's device worker; and
    a sender that died before the receiver connected broke the clip. The kernel frees a memfd
    once both ends have closed it, also after a kill -9.
    """

    INLINE = 32 * 1024  # bytes; a bigger message goes in the memfd too
    SEND_BUFFER = 4 * 2**20  # asked for; the kernel caps it at net.core.wmem_max

    def __init__(self) -> None:
        self._tx, self._rx = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._tx.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.SEND_BUFFER)

    def put(self, obj: Any, flag: RunFlag) -> bool:
        """Send `obj`; False if the run stops while the channel is full."""
        buffers: list[Any] = []
        body = _dumps(obj, buffers)
        fds = []
        if buffers or len(body) > self.INLINE:
            spill = body if len(body) > self.INLINE else b""
            fds = [_memfd([spill, *(b.numpy().view("uint8").reshape(-1) for b in buffers)])]
            body = pickle.dumps((len(spill), [b.nbytes for b in buffers], b"" if spill else body))
        else:
            body = pickle.dumps((None, [], body))
        self._tx.settimeout(0.5)
        try:
            while True:
                try:
                    socket.send_fds(self._tx, [body], fds)
                    return True
                except TimeoutError:
                    if not flag.running:
                        return False
        finally:
            for fd in fds:
                os.close(fd)

    def get(self, timeout: float) -> Any:
        """The next message, or None if none came within `timeout` seconds."""
        self._rx.settimeout(timeout)
        try:
            data, fds, _, _ = socket.recv_fds(self._rx, 2 * self.INLINE, 1)
        except TimeoutError:
            return None
        if not data:  # every sender has closed its end; not expected while the run lasts
            time.sleep(timeout)
            return None
        spilled, sizes, body = pickle.loads(data)
        tensors = []
        if fds:
            whole = bytearray(sum(sizes) + spilled)
            try:
                view, done = memoryview(whole), 0
                while done < len(whole):  # pread: the sender's writes moved the shared offset
                    got = os.preadv(fds[0], [view[done:]], done)
                    if not got:
                        raise EOFError(f"a clip's memfd holds {done} of {len(whole)} bytes")
                    done += got
            finally:
                os.close(fds[0])
            if spilled:
                body = bytes(whole[:spilled])
            tensors = _views(whole, spilled, sizes)
        return _loads(body, tensors)

    def close(self) -> None:
        self._tx.close()
        self._rx.close()


def _memfd(parts: list[Any]) -> int:
    """A memfd holding `parts` one after another, at offset 0."""
    fd = os.memfd_create("snactok-clip", os.MFD_CLOEXEC)
    try:
        with os.fdopen(os.dup(fd), "wb", buffering=0) as f:
            for part in parts:
                view = memoryview(part).cast("B")
                while view:
                    view = view[f.write(view) :]
    except BaseException:
        os.close(fd)
        raise
    return fd


class _Pickler(pickle.Pickler):
    """A pickle whose tensors stay out of band, in `buffers`, by index."""

    def __init__(self, file: Any, buffers: list[Any]):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.buffers = buffers

    def persistent_id(self, obj: Any) -> Any:
        import torch

        if not isinstance(obj, torch.Tensor):
            return None
        tensor = obj.detach().cpu().contiguous()
        self.buffers.append(tensor)
        return (len(self.buffers) - 1, str(tensor.dtype).removeprefix("torch."), tuple(tensor.shape))


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: Any, tensors: list[Any]):
        super().__init__(file)
        self.tensors = tensors

    def persistent_load(self, pid: Any) -> Any:
        import torch

        index, dtype, shape = pid
        return self.tensors[index].view(getattr(torch, dtype)).reshape(shape)


def _dumps(obj: Any, buffers: list[Any]) -> bytes:
    out = io.BytesIO()
    _Pickler(out, buffers).dump(obj)
    return out.getvalue()


def _loads(body: bytes, tensors: list[Any]) -> Any:
    return _Unpickler(io.BytesIO(body), tensors).load()


def _views(whole: bytearray, start: int, sizes: list[int]) -> list[Any]:
    """uint8 tensors over each buffer's bytes in `whole` (no copy)."""
    import torch

    views, offset = [], start
    for size in sizes:
        views.append(
            torch.frombuffer(whole, dtype=torch.uint8, count=size, offset=offset)
            if size
            else torch.empty(0, dtype=torch.uint8)
        )
        offset += size
    return views


_HEADER = struct.Struct("<Q")  # a frame: payload bytes, then the payload (a pickle)


class Outbox:
    """A child's end of its pipe to the main process.

    A thread writes the frames, so a child never waits while the main process is busy (committing
    a shard, say). The message is pickled at `send`, so later changes to its arrays cannot reach
    it. `close` waits until everything is written, or until the main process is gone.
    """

    def __init__(self, fd: int):
        self._fd = fd
        self._frames: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None

    def send(self, msg: tuple) -> None:
        data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
        if self._writer is None:
            self._writer = threading.Thread(target=self._write, name="snactok-outbox", daemon=True)
            self._writer.start()
        self._frames.put(_HEADER.pack(len(data)) + data)

    def _write(self) -> None:
        while (frame := self._frames.get()) is not None:
            view = memoryview(frame)
            try:
                if armed("sending"):  # a test stops the child with half a frame sent
                    self._write_all(view[: len(view) // 2])
                    reached("sending")
                    view = view[len(view) // 2 :]
                self._write_all(view)
            except OSError:  # the main process is gone; nobody is left to read
                return

    def _write_all(self, view: memoryview) -> None:
        while view:
            view = view[os.write(self._fd, view) :]

    def close(self) -> None:
        if self._writer is not None:
            self._frames.put(None)
            self._writer.join()
        os.close(self._fd)

    def __reduce__(self) -> tuple:
        return _rebuild_outbox, (DupFd(self._fd),)


def _rebuild_outbox(dup: Any) -> Outbox:
    return Outbox(dup.detach())


class Inbox:
    """The main process's ends of the children's pipes. `poll` never blocks past its timeout:
    it reads what is there and returns the whole messages."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._buffers: dict[str, bytearray] = {}
        self.cut: dict[str, tuple[int, int | None]] = {}  # closed mid-frame: (bytes got, frame size)
        self.closed: set[str] = set()

    def outbox_for(self, name: str) -> tuple[Outbox, int]:
        """A new pipe for child `name`: its Outbox, and the write end to close here once the child
        has started (else its death would never look like the end of the pipe)."""
        r, w = os.pipe()
        self._selector.register(r, selectors.EVENT_READ, name)
        self._buffers[name] = bytearray()
        return Outbox(w), w

    def poll(self, timeout: float) -> list[tuple[str, tuple]]:
        """(child name, message) for each whole message that arrived within `timeout` seconds."""
        got = []
        if not self._selector.get_map():
            time.sleep(timeout)
            return got
        for key, _ in self._selector.select(timeout):
            name, buf = key.data, self._buffers[key.data]
            chunk = os.read(key.fd, 2**20)
            if not chunk:
                self._close(key.fd, name)
                continue
            buf += chunk
            got += [(name, msg) for msg in _frames(buf)]
        return got

    def _close(self, fd: int, name: str) -> None:
        self._selector.unregister(fd)
        os.close(fd)
        self.closed.add(name)
        buf = self._buffers.pop(name)
        if buf:
            size = _HEADER.unpack_from(buf)[0] + _HEADER.size if len(buf) >= _HEADER.size else None
            self.cut[name] = (len(buf), size)

    def close(self) -> None:
        for key in list(self._selector.get_map().values()):
            self._selector.unregister(key.fd)
            os.close(key.fd)
        self._selector.close()


def _frames(buf: bytearray) -> list[tuple]:
    """Take the whole frames off the front of `buf`."""
    out, start = [], 0
    while len(buf) - start >= _HEADER.size:
        (size,) = _HEADER.unpack_from(buf, start)
        end = start + _HEADER.size + size
        if len(buf) < end:
            break
        out.append(pickle.loads(memoryview(buf)[start + _HEADER.size : end]))
        start = end
    del buf[:start]
    return out


@dataclass
class Links:
    """What every child is given to work with the others: the clip channel, the sample budget,
    the run flag and the Board."""

    work: ClipChannel
    budget: Budget
    flag: RunFlag
    board: Board
