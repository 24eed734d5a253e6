"""A worker SIGKILLed mid-generation: that request fails cleanly, this process and other models live on."""

from __future__ import annotations

import os

import pytest

from fmgguf.errors import FmggufError, RunnerCrashedError, WorkerError

pytestmark = pytest.mark.slow


def test_worker_killed_mid_generation_fails_only_that_request(workers, tiny_path, tmp_path) -> None:  # noqa: ANN001
    from fmgguf.runtime import ModelManager
    from fmgguf.runtime.runner.health import HealthBook
    from fmgguf.settings import load_settings

    settings = load_settings(home=tmp_path)
    bystander = ModelManager(settings, keep_alive=0, isolation="process")  # another model, its own runner
    manager = ModelManager(settings, keep_alive=0, isolation="process")
    try:
        bystander.load_file(tiny_path, model_id="bystander", n_ctx=256)
        a, b = workers
        manager.load_file(tiny_path, n_ctx=512, rpc=f"{a.endpoint},{b.endpoint}", n_gpu_layers=3,
                          tensor_split=[1, 2])
        stream = manager.generate_text("def fibonacci(n):", max_tokens=480, temperature=0, stream=True)
        pieces = []
        with pytest.raises(FmggufError) as caught:
            for piece in stream:
                pieces.append(piece)
                if len(pieces) == 3:
                    b.kill()  # SIGKILL, for real, while the model is generating
        assert len(pieces) >= 3
        err = caught.value
        assert isinstance(err, RunnerCrashedError), err
        assert "\n" not in str(err) and str(err).startswith("the runner for")
        assert b.endpoint in str(err)  # names the worker that was lost
        # not the model's fault: no crash on record (three worker losses must not mark it broken)
        assert HealthBook(settings.home).all() == [] and manager.broken() == {}

        # the selected model is started again on the next request: its lost worker is a one-line error
        with pytest.raises(WorkerError, match=rf"RPC worker {b.endpoint} is not reachable"):
            manager.generate_text("x", max_tokens=2, temperature=0)
        assert HealthBook(settings.home).all() == []
        # the next request without that worker works, and so does the other model
        manager.load_file(tiny_path, n_ctx=256, rpc="")
        assert manager.generate_text("def f(x):", max_tokens=4, temperature=0).completion_tokens == 4
        assert bystander.generate_text("def f(x):", max_tokens=4, temperature=0).completion_tokens == 4
        assert os.getpid() > 0  # (this process is still here)
    finally:
        manager.close()
        bystander.close()
