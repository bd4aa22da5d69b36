"""Runs the consumer examples of examples/clients/ against the real service.

For each client (python, node), against a service of its own with a token:
  1. leads sent through the webhook are all processed, and Roistat's export shows
     each one's deal as the client reported it;
  2. after a SIGTERM in the middle of the work and a restart, no lead is missed and
     none is processed twice;
  3. after a SIGKILL in the middle of the work and a restart, no lead is missed and
     only the lead that was not yet acknowledged is processed again.

Usage: python3 .ci/clients.py BINARY DEPS_DIR
(DEPS_DIR holds python/ and node/node_modules, installed by .ci/run.)
"""

import hashlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[1]
USER, PASSWORD = "ci", "ci-password"
TOKEN = hashlib.md5((USER + PASSWORD).encode()).hexdigest()
GRPC_TOKEN = "ci-grpc-token"
BATCH = 20


def fail(message):
    sys.exit(f"clients: FAILED: {message}")


class Service:
    def __init__(self, binary, workdir):
        self.log = open(workdir / "service.log", "w+")
        env = dict(os.environ, ROISTAT_USER=USER, ROISTAT_PASSWORD=PASSWORD,
                   ROISTAT_LEADS_GRPC_TOKEN=GRPC_TOKEN, RUST_LOG="info")
        self.process = subprocess.Popen(
            [binary, "serve", "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0",
             "--console-addr", "off", "--log-format", "json",
             "--database-url", f"sqlite://{workdir / 'leads.db'}"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:
            self.log.seek(0)
            for line in self.log:
                if '"listening"' in line:
                    fields = json.loads(line)["fields"]
                    self.http, self.grpc = fields["http_addr"], fields["grpc_addr"]
                    return
            if self.process.poll() is not None:
                fail("the service exited at start:\n" + (workdir / "service.log").read_text())
            time.sleep(0.1)
        fail("the service did not start")

    def webhook(self, **params):
        query = urllib.parse.urlencode(dict(user=USER, token=TOKEN, **params))
        with urllib.request.urlopen(f"http://{self.http}/webhook?{query}", timeout=10) as response:
            return json.loads(response.read())

    def send_leads(self, first, count):
        for n in range(first, first + count):
            answer = self.webhook(action="lead", id=str(n), title=f"Lead {n}", name="Robert",
                                  phone="+79990001122")
            if answer.get("status") != "ok":
                fail(f"lead {n} answered {answer}")

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)


class Client:
    def __init__(self, name, deps, service, workdir):
        self.name, self.service, self.workdir = name, service, workdir
        self.processed = workdir / f"{name}-processed.log"
        self.processed.touch()
        self.env = dict(os.environ, ROISTAT_LEADS_GRPC=service.grpc,
                        ROISTAT_LEADS_GRPC_TOKEN=GRPC_TOKEN, CONSUMER=f"{name}-ci",
                        PROCESSED_LOG=str(self.processed))
        if name == "python":
            self.env["PYTHONPATH"] = str(deps / "python")
            self.command = [sys.executable, str(ROOT / "examples/clients/python/consumer.py")]
        else:
            self.env["NODE_PATH"] = str(deps / "node" / "node_modules")
            self.command = ["node", str(ROOT / "examples/clients/node/consumer.js")]
        self.process = None

    def start(self, delay_ms=0):
        env = dict(self.env, PROCESS_DELAY_MS=str(delay_ms))
        out = open(self.workdir / f"{self.name}-client.log", "a")
        self.process = subprocess.Popen(self.command, env=env, stdout=out, stderr=subprocess.STDOUT)

    def lines(self):
        return self.processed.read_text().split()

    def wait_for(self, count, timeout=120):
        deadline = time.time() + timeout
        while len(set(self.lines())) < count:
            if self.process.poll() is not None:
                fail(f"{self.name}: the client exited:\n" + (self.workdir / f"{self.name}-client.log").read_text())
            if time.time() > deadline:
                fail(f"{self.name}: {len(set(self.lines()))} of {count} leads processed")
            time.sleep(0.05)

    def stop(self, sig):
        self.process.send_signal(sig)
        code = self.process.wait(timeout=30)
        if sig == signal.SIGTERM and code != 0:
            fail(f"{self.name}: exit code {code} after SIGTERM")


def expect_all(client, count):
    lines = client.lines()
    expected = {f"default/{n}" for n in range(1, count + 1)}
    missing = expected - set(lines)
    if missing:
        fail(f"{client.name}: leads never processed: {sorted(missing)}")
    return lines


def run(name, binary, deps):
    workdir = pathlib.Path(tempfile.mkdtemp(prefix=f"clients-{name}-"))
    service = Service(binary, workdir)
    client = Client(name, deps, service, workdir)
    try:
        # 1. Every lead processed, its deal reported.
        service.send_leads(1, BATCH)
        client.start()
        client.wait_for(BATCH)
        client.stop(signal.SIGTERM)
        lines = expect_all(client, BATCH)
        if len(lines) != BATCH:
            fail(f"{name}: {len(lines)} processings of {BATCH} leads")
        export = service.webhook(action="export", date="0")
        statuses = {order["id"]: order["status"] for order in export["orders"]}
        unreported = [n for n in range(1, BATCH + 1) if statuses.get(str(n)) != "processed"]
        if unreported:
            fail(f"{name}: deals not reported for leads {unreported}: {export}")

        # 2. SIGTERM in the middle, then a restart: none missed, none twice.
        service.send_leads(BATCH + 1, BATCH)
        client.start(delay_ms=100)
        client.wait_for(BATCH + 5)
        client.stop(signal.SIGTERM)
        client.start()
        client.wait_for(2 * BATCH)
        client.stop(signal.SIGTERM)
        lines = expect_all(client, 2 * BATCH)
        if len(lines) != 2 * BATCH:
            fail(f"{name}: after SIGTERM, {len(lines) - 2 * BATCH} leads processed twice")

        # 3. SIGKILL in the middle, then a restart: none missed, only the lead
        # in flight (not acknowledged) again.
        service.send_leads(2 * BATCH + 1, BATCH)
        client.start(delay_ms=100)
        client.wait_for(2 * BATCH + 5)
        client.stop(signal.SIGKILL)
        client.start()
        client.wait_for(3 * BATCH)
        client.stop(signal.SIGTERM)
        lines = expect_all(client, 3 * BATCH)
        repeated = len(lines) - 3 * BATCH
        if repeated > 1:
            fail(f"{name}: after SIGKILL, {repeated} leads processed twice (at most the one in flight)")
        print(f"clients: {name}: ok ({len(lines)} processings of {3 * BATCH} leads, "
              f"{repeated} repeated after SIGKILL)")
    finally:
        if client.process and client.process.poll() is None:
            client.process.kill()
        service.stop()


def main():
    binary, deps = sys.argv[1], pathlib.Path(sys.argv[2])
    for name in ("python", "node"):
        run(name, binary, deps)


if __name__ == "__main__":
    main()
