"""A three-node `ravel` cluster on loopback for the benchmark scripts: started, formed, stopped.

    with ThreeNodes(ravel, base_port=28000, config="snapshot_interval_entries = 100000") as cluster:
        cluster.endpoints, cluster.nodes (Popen), cluster.leader(), cluster.status(endpoint)
"""
import os
import re
import shutil
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ravel_binary():
    """RAVEL=path/to/ravel runs another build (an A/B comparison); else this tree, built."""
    if os.environ.get("RAVEL"):
        return os.environ["RAVEL"]
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "ravel"], cwd=ROOT, check=True)
    return os.path.join(ROOT, "target", "release", "ravel")


class ThreeNodes:
    def __init__(self, ravel, base_port, config=None, prefix="ravel-bench."):
        self.ravel = ravel
        self.endpoints = [f"127.0.0.1:{base_port + i}" for i in range(3)]
        self.config = config
        self.prefix = prefix
        self.nodes = []
        self.work = None

    def __enter__(self):
        self.work = tempfile.mkdtemp(prefix=self.prefix)
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self):
        settings = []
        if self.config:
            path = os.path.join(self.work, "ravel.toml")
            with open(path, "w") as out:
                out.write(self.config + "\n")
            settings = ["--config", path]
        for i, endpoint in enumerate(self.endpoints):
            command = [self.ravel, "node", "--id", str(i + 1), "--listen", endpoint,
                       "--data-dir", os.path.join(self.work, f"n{i + 1}")] + settings
            if i > 0:
                command += ["--join", self.endpoints[0]]
            log = open(os.path.join(self.work, f"n{i + 1}.log"), "w")
            self.nodes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
            time.sleep(1.5 if i == 0 else 0.5)
        deadline = time.time() + 30
        while time.time() < deadline:
            if all(re.search(r"member state: +voter", self.status(e)) for e in self.endpoints):
                return
            time.sleep(0.5)
        raise SystemExit(f"the cluster did not form; logs in {self.work}")

    def status(self, endpoint):
        out = subprocess.run([self.ravel, "status", "--endpoints", endpoint],
                             capture_output=True, text=True)
        return out.stdout if out.returncode == 0 else ""

    def leader(self):
        """The leader's node id (1-3), if the first node knows it."""
        found = re.search(r"leader: +(\d+) ", self.status(self.endpoints[0]))
        return int(found.group(1)) if found else None

    def bench(self, *arguments):
        """Runs `ravel bench` against all three nodes and returns its output."""
        return subprocess.run([self.ravel, "bench", "--endpoints", ",".join(self.endpoints)]
                              + list(arguments), capture_output=True, text=True).stdout

    def __exit__(self, *_):
        for node in self.nodes:
            node.terminate()
        for node in self.nodes:
            node.wait()
        shutil.rmtree(self.work, ignore_errors=True)
        return False
