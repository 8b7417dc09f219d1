"""What the server checks share: phi-zoo's example binaries, a tiny model folder, and a server
process that is started, waited for and always stopped.

The binaries are cargo's (`target/debug/examples` unless PHI_ZOO_BIN_DIR says otherwise), so run
`cargo test` (or `cargo build --examples`) first; `.ci/run` does.
"""

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def binary(name):
    folder = Path(os.environ.get("PHI_ZOO_BIN_DIR", ROOT / "target" / "debug" / "examples"))
    path = folder / name
    if not path.exists():
        sys.exit(f"{path} is missing: build the examples first (cargo build --examples)")
    return str(path)


def tiny_model(folder, config="tiny"):
    """A freshly initialised model with Phi's vocabulary, written by examples/bench."""
    folder = Path(folder)
    if not (folder / "config.json").exists():
        subprocess.run(
            [binary("bench"), "--config", config, "--export", str(folder),
             "--prompt-tokens", "4", "--new-tokens", "1"],
            check=True, stdout=subprocess.DEVNULL,
        )
    return folder


def generate_ids(model, prompt, max_new_tokens):
    """examples/generate's greedy ids for `prompt`."""
    out = subprocess.run(
        [binary("generate"), "--model", str(model), "--prompt", prompt, "--greedy",
         "--max-new-tokens", str(max_new_tokens), "--json"],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout)


@contextlib.contextmanager
def server(model, *extra, name="tiny", binary_path=None, timeout=120):
    """Runs the server on a free port; yields its base URL ("http://127.0.0.1:PORT")."""
    command = [binary_path or binary("serve"), "--model", str(model), "--port", "0",
               "--served-model-name", name, *extra]
    log = tempfile.TemporaryFile(mode="w+")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        line = read_line(process, timeout)
        if not line.startswith("listening on "):
            log.seek(0)
            raise RuntimeError(f"the server did not start: {line!r}\n{log.read()}")
        yield line.split()[-1]
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.seek(0)
        tail = log.read()[-2000:]
        if process.returncode not in (0, -15):
            print(f"server log:\n{tail}", file=sys.stderr)


def read_line(process, timeout):
    result = []
    reader = threading.Thread(target=lambda: result.append(process.stdout.readline()))
    reader.daemon = True
    reader.start()
    reader.join(timeout)
    if not result:
        raise RuntimeError(f"no address from the server within {timeout} s")
    return result[0].strip()


def get_json(url):
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def wait_idle(base, timeout=60):
    """Waits until the engine has nothing running or queued; returns /health."""
    deadline = time.time() + timeout
    while True:
        health = get_json(base + "/health")
        engine = health["engine"]
        if engine["running"] == 0 and engine["queued"] == 0:
            return health
        if time.time() > deadline:
            raise RuntimeError(f"the engine never went idle: {health}")
        time.sleep(0.05)
