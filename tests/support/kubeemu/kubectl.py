"""Running the real kubectl against an emulator (or any cluster) from tests."""

from __future__ import annotations

import pathlib
import subprocess

DEFAULT_TIMEOUT = 30.0


class Kubectl:
    """kubectl with a fixed kubeconfig and its own discovery cache (``--cache-dir``).

    Pass ``--validate=false`` to commands that send objects: the emulator serves no OpenAPI.
    """

    def __init__(self, kubeconfig: pathlib.Path, cache_dir: pathlib.Path) -> None:
        self.base = ["kubectl", "--kubeconfig", str(kubeconfig), "--cache-dir", str(cache_dir)]

    def __call__(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> subprocess.CompletedProcess[str]:
        """Run to completion; by default, a non-zero exit fails with kubectl's stderr."""
        result = subprocess.run(
            [*self.base, *args], input=input, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
            )
        return result

    def stream(self, *args: str, seconds: float) -> str:
        """Run a command that does not end by itself (``get -w``) for a while; its output."""
        try:
            subprocess.run([*self.base, *args], capture_output=True, text=True, timeout=seconds)
        except subprocess.TimeoutExpired as e:
            out = e.stdout or b""
            return out.decode() if isinstance(out, bytes) else out
        raise AssertionError(f"kubectl {' '.join(args)} ended within {seconds}s")
