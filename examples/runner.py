"""A reference workflow runner for Lodge: it claims executions, runs each one's nodes in
topological order with a handler per node type, reports every node through the execution's logs,
keeps its lease alive with heartbeats and ends the execution COMPLETED or FAILED.

    uv run python examples/runner.py --url http://127.0.0.1:8000/graphql --token "$TOKEN" --name runner-1

The token is an access or session token of an account holding `workflows:write` (it runs anyone's
executions), or of a workflow's owner (it runs theirs). Handlers are plain async functions
`handler(node, inputs) -> output`, one per node type: pass your own to `Runner(handlers=...)`.
A runner that dies mid-run leaves its lease to run out; the server then hands the execution to the
next claimer (`LODGE_LEASE_SWEEP_SECONDS`, `LODGE_EXECUTION_MAX_ATTEMPTS`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

log = logging.getLogger("lodge.runner")

# A node's inputs: the outputs of the nodes with an edge into it, by their keys, and the
# execution's own input under "$input".
Handler = Callable[[dict[str, Any], dict[str, Any]], Awaitable[Any]]

CLAIM = """
mutation Claim($runner: String!, $workflowId: ID, $lease: Int!) {
  claimExecution(runner: $runner, workflowId: $workflowId, leaseSeconds: $lease) {
    id input workflowVersion workflow { id }
  }
}"""
VERSION = """
query Version($id: ID!, $before: Int!) {
  workflow(id: $id) { versions(last: 1, before: $before) {
    version nodes { key type label configuration } edges { source target } } }
}"""
HEARTBEAT = """
mutation Heartbeat($id: ID!, $runner: String!, $lease: Int!) {
  heartbeatExecution(id: $id, runner: $runner, leaseSeconds: $lease) { leaseExpiresAt }
}"""
LOG = """
mutation Log($id: ID!, $runner: String!, $input: ExecutionLogInput!) {
  appendExecutionLog(executionId: $id, runner: $runner, input: $input) { cursor }
}"""
FINISH = """
mutation Finish($id: ID!, $runner: String!, $status: ExecutionStatus!, $output: JSON, $error: String) {
  updateExecutionStatus(id: $id, runner: $runner, status: $status, output: $output, errorMessage: $error) { status }
}"""


class LostLease(Exception):
    """The execution is no longer this runner's: stop without reporting anything more."""


class GraphQLError(Exception):
    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors[0].get("message", "error"))
        self.code = errors[0].get("extensions", {}).get("code")


async def noop(node: dict[str, Any], inputs: dict[str, Any]) -> Any:
    """Passes its inputs on."""
    return {key: value for key, value in inputs.items() if key != "$input"} or inputs.get("$input")


async def delay(node: dict[str, Any], inputs: dict[str, Any]) -> Any:
    """Waits `configuration.seconds` (at most 60)."""
    await asyncio.sleep(min(float(node["configuration"].get("seconds", 0)), 60.0))
    return None


DEFAULT_HANDLERS: dict[str, Handler] = {"noop": noop, "delay": delay}


def topological(nodes: list[dict[str, Any]], edges: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Nodes in an order where every edge's source comes before its target (ties by key, so a
    run is repeatable). Lodge refuses cycles when edges are added, but a runner checks anyway."""
    by_key = {node["key"]: node for node in nodes}
    into: dict[str, int] = dict.fromkeys(by_key, 0)
    out: dict[str, list[str]] = {key: [] for key in by_key}
    for edge in edges:
        out[edge["source"]].append(edge["target"])
        into[edge["target"]] += 1
    ready = sorted(key for key, count in into.items() if count == 0)
    order: list[dict[str, Any]] = []
    while ready:
        key = ready.pop(0)
        order.append(by_key[key])
        for target in sorted(out[key]):
            into[target] -= 1
            if into[target] == 0:
                ready.append(target)
        ready.sort()
    if len(order) != len(nodes):
        raise ValueError("the workflow's edges form a cycle")
    return order


@dataclass
class Runner:
    client: httpx.AsyncClient
    url: str
    token: str
    name: str
    handlers: dict[str, Handler] = field(default_factory=lambda: dict(DEFAULT_HANDLERS))
    lease_seconds: int = 30
    workflow_id: str | None = None

    async def call(self, query: str, **variables: Any) -> dict[str, Any]:
        response = await self.client.post(
            self.url,
            json={"query": query, "variables": variables},
            headers={"authorization": f"Bearer {self.token}"},
        )
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        if body.get("errors"):
            error = GraphQLError(body["errors"])
            if error.code == "CONFLICT":
                raise LostLease(str(error))
            raise error
        data: dict[str, Any] = body["data"]
        return data

    async def run_once(self) -> str | None:
        """Claim one execution and run it; its id, or None when there was none to claim."""
        claimed = (await self.call(CLAIM, runner=self.name, workflowId=self.workflow_id, lease=self.lease_seconds))[
            "claimExecution"
        ]
        if claimed is None:
            return None
        execution_id: str = claimed["id"]
        beat = asyncio.create_task(self._heartbeats(execution_id), name=f"heartbeat:{execution_id}")
        work = asyncio.create_task(self._run(claimed), name=f"run:{execution_id}")
        try:
            done, _ = await asyncio.wait({beat, work}, return_when=asyncio.FIRST_COMPLETED)
            if beat in done:  # the lease is lost: whatever the run still does would be refused
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError, LostLease):
                    await work
                log.warning("lost the lease of %s: %s", execution_id, beat.exception())
            else:
                with contextlib.suppress(LostLease):
                    work.result()
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await beat
        return execution_id

    async def run_forever(self, *, idle_seconds: float = 2.0, max_backoff: float = 60.0) -> None:
        """Claim and run until stopped. A failure (Lodge refusing, rate limiting or unreachable)
        is logged and retried after a growing pause: one bad execution never stops the runner."""
        backoff = idle_seconds
        while True:
            try:
                ran = await self.run_once()
            except (GraphQLError, httpx.HTTPError) as exc:
                log.warning("runner %s: %s; retrying in %.0f s", self.name, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, max_backoff)
                continue
            backoff = idle_seconds
            if ran is None:
                await asyncio.sleep(idle_seconds)

    async def _heartbeats(self, execution_id: str) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            await self.call(HEARTBEAT, id=execution_id, runner=self.name, lease=self.lease_seconds)

    async def _log(self, execution_id: str, node: str | None, level: str, message: str, data: Any = None) -> None:
        entry = {"nodeKey": node, "level": level, "message": message, "data": data}
        await self.call(LOG, id=execution_id, runner=self.name, input=entry)

    async def _run(self, claimed: dict[str, Any]) -> None:
        execution_id = claimed["id"]
        version = claimed["workflowVersion"]
        found = await self.call(VERSION, id=claimed["workflow"]["id"], before=version + 1)
        if found["workflow"] is None or not found["workflow"]["versions"]:
            # Deleted (or made private) since it was claimed: nothing to run.
            await self.call(FINISH, id=execution_id, runner=self.name, status="FAILED", error="workflow not readable")
            return
        snapshot = found["workflow"]["versions"][0]
        outputs: dict[str, Any] = {}
        try:
            order = topological(snapshot["nodes"], snapshot["edges"])
            for node in order:
                handler = self.handlers.get(node["type"])
                if handler is None:
                    raise LookupError(f"no handler for node type {node['type']!r}")
                inputs = {"$input": claimed["input"]}
                inputs.update(
                    {e["source"]: outputs[e["source"]] for e in snapshot["edges"] if e["target"] == node["key"]}
                )
                await self._log(execution_id, node["key"], "INFO", f"{node['type']} started")
                outputs[node["key"]] = await handler(node, inputs)
                await self._log(execution_id, node["key"], "INFO", f"{node['type']} done")
        except (LostLease, asyncio.CancelledError):
            raise
        except Exception as exc:
            await self.call(FINISH, id=execution_id, runner=self.name, status="FAILED", error=str(exc)[:10_000])
            return
        await self.call(FINISH, id=execution_id, runner=self.name, status="COMPLETED", output=outputs)


async def _main(args: argparse.Namespace) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        runner = Runner(client, args.url, args.token, args.name, lease_seconds=args.lease, workflow_id=args.workflow)
        await runner.run_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000/graphql")
    parser.add_argument("--token", required=True)
    parser.add_argument("--name", required=True, help="this runner's name, unique among running runners")
    parser.add_argument("--lease", type=int, default=30, help="lease seconds (heartbeats every third of it)")
    parser.add_argument("--workflow", help="claim executions of this workflow only")
    logging.basicConfig(level=logging.INFO)
    try:
        asyncio.run(_main(parser.parse_args()))
    except KeyboardInterrupt:
        sys.exit(0)
