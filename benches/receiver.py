"""A minimal HTTP receiver for callback benchmarks: answers every request 200 at once (HTTP/1.1,
keep-alive) and writes how many it received to a file every 50 ms.

    python benches/receiver.py PORT COUNT_FILE
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
received = 0


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    global received
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            received += 1
            writer.write(OK)
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


async def report(path: Path) -> None:
    last = -1
    while True:
        if received != last:
            last = received
            path.write_text(str(last))
        await asyncio.sleep(0.05)


async def main(port: int, path: Path) -> None:
    server = await asyncio.start_server(serve, "127.0.0.1", port, backlog=1024)
    async with server:
        await asyncio.gather(server.serve_forever(), report(path))


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(int(sys.argv[1]), Path(sys.argv[2])))
