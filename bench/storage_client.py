"""S3 client libraries for k2e.blobstore_s3, side by side: boto3 and obstore putting and
getting one large file against a real S3 server (SeaweedFS, tests/support/s3_server.py)
on this machine. Wall time and this process's CPU time (user + system, every thread of
the client included) per operation, in alternating rounds.

    python -m bench.storage_client [--mib 1024] [--rounds 2]
"""

import argparse
import os
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import boto3
import obstore
from boto3.s3.transfer import TransferConfig
from obstore.store import S3Store

from tests.support.s3_server import CREDENTIALS, S3Server

PART = 16 * 1024 * 1024


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _measure(action: Callable[[], None]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), _cpu()
    action()
    return time.perf_counter() - wall, _cpu() - cpu


def _boto(server: S3Server, src: Path, dest: Path) -> dict[str, Callable[[], None]]:
    client = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=CREDENTIALS["AWS_REGION"],
    )
    config = TransferConfig(multipart_chunksize=PART, multipart_threshold=PART)

    def stream() -> None:
        body = client.get_object(Bucket=server.bucket, Key="bench/boto3")["Body"]
        with dest.open("wb") as out:
            for chunk in body.iter_chunks(1024 * 1024):
                out.write(chunk)

    return {
        "put (multipart)": lambda: client.upload_file(
            str(src), server.bucket, "bench/boto3", Config=config
        ),
        "get (parallel ranges)": lambda: client.download_file(
            server.bucket, "bench/boto3", str(dest), Config=config
        ),
        "get (one stream)": stream,
    }


def _obstore(server: S3Server, src: Path, dest: Path) -> dict[str, Callable[[], None]]:
    store = S3Store(
        server.bucket,
        endpoint=server.endpoint,
        access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region=CREDENTIALS["AWS_REGION"],
        client_options={"allow_http": True},
    )

    def stream() -> None:
        with dest.open("wb") as out:
            for chunk in obstore.get(store, "bench/obstore").stream(min_chunk_size=1024 * 1024):
                out.write(chunk)

    return {
        "put (multipart)": lambda: obstore.put(
            store, "bench/obstore", src, chunk_size=PART, max_concurrency=12
        ),
        "get (one stream)": stream,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        src, dest = folder / "src.bin", folder / "dest.bin"
        with src.open("wb") as f:
            for _ in range(args.mib):
                f.write(os.urandom(1024 * 1024))
        server = S3Server(folder / "s3").start()
        try:
            libraries = {
                "boto3": _boto(server, src, dest),
                "obstore": _obstore(server, src, dest),
            }
            print(f"{args.mib} MiB, part size {PART // 2**20} MiB")
            for round_ in range(args.rounds):
                for library, actions in libraries.items():
                    for name, action in actions.items():
                        wall, cpu = _measure(action)
                        if name.startswith("get"):
                            assert dest.stat().st_size == src.stat().st_size
                            dest.unlink()
                        rate = args.mib / wall
                        print(
                            f"round {round_ + 1} | {library} | {name} | {wall:.1f} s | "
                            f"{rate:.0f} MiB/s | CPU {cpu:.1f} s"
                        )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
