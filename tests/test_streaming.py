"""Video-aware open: ffprobe costs a couple of requests, and nothing at all after a remount."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import ffprobe_duration, mount_config, start_emulator, stop_process, unmount
from tests.providers import CASES
from vidfs.commands.demo import write_config
from vidfs.emulator.media import moov_at_end


# Pixop's names end in the file's extension; Hour One's are the API's `name` (no extension: the file's
# comes from its content type), so the container is told by the file's name on the mount.
@pytest.mark.parametrize(("provider", "storage_path"), [("pixop", "/media/"), ("hourone", "/storage/")])
def test_ffprobe_of_a_moov_at_end_file_is_cheap_and_then_free(
    tmp_path: Path, media_dir: Path, provider: str, storage_path: str
) -> None:
    if not shutil.which("ffprobe"):
        pytest.skip("ffprobe missing")
    case = CASES[provider]
    emulator = start_emulator(tmp_path / "emulator", [provider], media_dir)
    try:
        expected = case.expected(emulator.catalog(provider))
        rel, expect = max(
            ((r, e) for r, e in expected.items() if moov_at_end(Path(e.source))),
            key=lambda item: item[1].size,
        )
        config = write_config(
            tmp_path / "vidfs.toml", {"p": emulator.config(provider)}, cache_dir=tmp_path / "cache"
        )

        def storage_gets() -> list[dict[str, object]]:
            return [
                r
                for r in emulator.requests(provider)
                if r["method"] == "GET" and storage_path in str(r["path"])
            ]

        for attempt in range(2):
            mount = mount_config(config, tmp_path / "mnt", tmp_path / f"mount{attempt}.log")
            try:
                before = len(storage_gets())
                assert ffprobe_duration(mount.path / "p" / rel) > 0
                gets = storage_gets()[before:]
                moov_fetched = mount.stats()["counters"].get("prefetch.moov_tail", 0)
            finally:
                unmount(mount)
            served = sum(int(str(r["bytes_sent"])) for r in gets)
            if attempt == 0:
                # The open fetched the moov at once (`VideoFS._warm_container`) ...
                assert moov_fetched == 1, (rel, moov_fetched)
                # ... so the head and the moov: a handful of requests, a sliver of the file.
                assert 1 <= len(gets) <= 6, gets
                assert served <= max(0.05 * expect.size, 2 << 20), served
            else:
                # The disk cache kept those blocks across the remount: ffprobe needs no request at all.
                assert gets == []
    finally:
        stop_process(emulator.process)
