"""Claims on concepts (tasks.claims): one run trains a concept at a time; a dead or silent holder loses its claim,
and two takers of a dead holder's claim never both win."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

from tasks.claims import Claim, Claims, claim_key

DIGEST = "0123456789abcdef"


def test_a_live_claim_is_kept_and_let_go_by_its_holder(tmp_path: Path) -> None:
    first, second = Claims(str(tmp_path), "run-1"), Claims(str(tmp_path), "run-2")
    assert first.take("cat", DIGEST) is None
    assert first.take("cat", DIGEST) is None, "taking one's own claim again is fine"
    held = second.take("cat", DIGEST)
    assert held is not None and held.run_id == "run-1"
    assert second.holder("cat", DIGEST) == held
    second.release("cat", DIGEST)  # not run-2's: left alone
    assert (tmp_path / claim_key("cat", DIGEST)).exists()
    first.release("cat", DIGEST)
    assert not (tmp_path / claim_key("cat", DIGEST)).exists()
    assert second.take("cat", DIGEST) is None


def test_a_dead_holders_claim_is_taken_over(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    first = Claims(str(tmp_path), "run-1")
    first.take("cat", DIGEST)
    stored = Claim.from_json((tmp_path / claim_key("cat", DIGEST)).read_bytes())
    assert stored is not None and not stored.is_dead()
    (tmp_path / claim_key("cat", DIGEST)).write_bytes(Claim(**{**stored.__dict__, "pid": pid}).to_json())
    assert Claims(str(tmp_path), "run-2").take("cat", DIGEST) is None, "the holder's process is gone"
    expired = Claim("dog", DIGEST, "run-9", "another-host", 1, None, time.time() - 1)
    (tmp_path / claim_key("dog", DIGEST)).parent.mkdir(parents=True)
    (tmp_path / claim_key("dog", DIGEST)).write_bytes(expired.to_json())
    assert Claims(str(tmp_path), "run-2").take("dog", DIGEST) is None, "an expired claim of another host"


def test_takers_of_a_dead_claim_never_both_win(tmp_path: Path) -> None:
    expired = Claim("cat", DIGEST, "run-0", "another-host", 1, None, time.time() - 1)
    (tmp_path / claim_key("cat", DIGEST)).parent.mkdir(parents=True)
    (tmp_path / claim_key("cat", DIGEST)).write_bytes(expired.to_json())
    start, won = threading.Barrier(6), []

    def take(i: int) -> None:
        start.wait()
        if Claims(str(tmp_path), f"run-{i}").take("cat", DIGEST) is None:
            won.append(i)

    threads = [threading.Thread(target=take, args=(i,)) for i in range(1, 7)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1, won


def test_a_holder_renews_its_claims_and_lets_go_on_exit(tmp_path: Path) -> None:
    with Claims(str(tmp_path), "run-1", ttl_s=0.6) as claims:
        claims.take("cat", DIGEST)
        time.sleep(1.0)  # past the first expiry: renewed every 0.2 s
        assert Claims(str(tmp_path), "run-2").take("cat", DIGEST) is not None
    assert not (tmp_path / claim_key("cat", DIGEST)).exists()
