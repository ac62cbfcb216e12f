"""The fuzzer's callers and the real rows it fuzzes against, made through the API as a client would: an admin
(a role with `*`, granted through the database as `lodge create-user --admin` does), a plain user, API keys, and
rows of every kind. The fuzzing deletes and revokes them; they are made again (`provision`, `seed`)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx

from bench.fuzz.database import Database
from bench.fuzz.report import Stats
from bench.fuzz.strategies import PASSWORD, Pools


class GraphQLFailed(Exception):
    pass


class Seeder:
    def __init__(self, client: httpx.AsyncClient, db: Database, pools: Pools, stats: Stats) -> None:
        self.client = client
        self.db = db
        self.pools = pools
        self.stats = stats
        self.tokens: dict[str, str] = {}
        self.user_ids: dict[str, str] = {}
        self.keys: dict[str, str] = {}
        self.superuser_role: str = ""
        self.generation = 0

    async def gql(self, query: str, variables: dict[str, Any] | None = None, auth: str | None = None) -> Any:
        headers = {"authorization": auth} if auth else {}
        response = await self.client.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
        )
        body = response.json()
        if body.get("errors"):
            raise GraphQLFailed(json.dumps(body["errors"])[:500])
        return body["data"]

    def bearer(self, persona: str) -> str:
        return f"Bearer {self.tokens[persona]}"

    async def register(self, label: str) -> tuple[str, str]:
        email = f"fuzz-{label}-{uuid.uuid4().hex[:8]}@example.com"
        data = await self.gql(
            "mutation($i: RegisterInput!) { register(input: $i) { accessToken refreshToken user { id } } }",
            {"i": {"email": email, "password": PASSWORD, "name": label}},
        )
        self.pools.harvested["refreshToken"].append(data["register"]["refreshToken"])
        return data["register"]["accessToken"], data["register"]["user"]["id"]

    async def provision(self, persona: str) -> None:
        """A fresh admin (a role with `*`, granted through the database as `lodge create-user --admin`
        does) or plain user."""
        token, user_id = await self.register(persona)
        if persona == "admin":
            if self.superuser_role and not await self.db.conn.fetchval(
                "SELECT 1 FROM roles WHERE id = $1", uuid.UUID(self.superuser_role)
            ):
                self.superuser_role = ""  # the fuzzing deleted it (deleteRole)
            if not self.superuser_role:
                self.superuser_role = str(
                    await self.db.conn.fetchval(
                        "INSERT INTO roles (name, permissions) VALUES ($1, '[\"*\"]') RETURNING id",
                        f"fuzz-superuser-{uuid.uuid4().hex[:8]}",
                    )
                )
            await self.db.conn.execute(
                "INSERT INTO user_roles (user_id, role_id) VALUES ($1, $2)",
                uuid.UUID(user_id),
                uuid.UUID(self.superuser_role),
            )
        self.tokens[persona], self.user_ids[persona] = token, user_id

    async def persona_ok(self, persona: str) -> bool:
        try:
            me = (await self.gql("{ me { id roles { permissions } } }", auth=self.bearer(persona)))["me"]
        except (GraphQLFailed, KeyError):
            return False
        if me is None:
            return False
        permissions = {p for role in me["roles"] for p in role["permissions"]}
        return "*" in permissions if persona == "admin" else not permissions

    async def step(self, label: str, query: str, variables: dict[str, Any], auth: str) -> Any:
        try:
            return await self.gql(query, variables, auth)
        except (GraphQLFailed, httpx.HTTPError, ValueError) as exc:
            self.stats.seed_failures.append(f"{label}: {exc}"[:300])
            return None

    async def seed(self) -> None:
        """Real rows of every kind, owned by the admin and by the plain user."""
        self.generation += 1
        self.stats.reseeds += 1
        n = f"{self.generation}-{uuid.uuid4().hex[:6]}"
        for persona in ("admin", "user"):
            if persona not in self.tokens or not await self.persona_ok(persona):
                await self.provision(persona)
        _, victim = await self.register("victim")
        admin, user = self.bearer("admin"), self.bearer("user")
        s = self.step
        project = await s("project", 'mutation { createProject(input: {name: "fuzz"}) { id } }', {}, admin)
        if project is None:
            return
        pid = project["createProject"]["id"]
        key = await s(
            "key",
            'mutation($p: ID!) { createApiKey(input: {projectId: $p, label: "fuzz"}) { secret } }',
            {"p": pid},
            admin,
        )
        client = await s(
            "client", 'mutation { createClient(input: {name: "fuzz", email: "c@example.com"}) { id } }', {}, admin
        )
        service_name = f"svc-{n}"
        service = await s(
            "service", "mutation($n: String!) { createService(input: {name: $n}) { id } }", {"n": service_name}, admin
        )
        sid = service["createService"]["id"] if service else str(uuid.uuid4())
        await s(
            "project service",
            "mutation($p: ID!, $s: ID!) { addProjectService(projectId: $p, serviceId: $s) { id } }",
            {"p": pid, "s": sid},
            admin,
        )
        if client:
            await s(
                "project client",
                "mutation($p: ID!, $c: ID!) { updateProject(id: $p, input: {clientId: $c}) { id } }",
                {"p": pid, "c": client["createClient"]["id"]},
                admin,
            )
        env = await s(
            "environment",
            "mutation($p: ID!, $n: String!) { createEnvironment(projectId: $p, name: $n) { id } }",
            {"p": pid, "n": f"env-{n}"},
            admin,
        )
        eid = env["createEnvironment"]["id"] if env else str(uuid.uuid4())
        await s(
            "enable",
            "mutation($e: ID!, $s: ID!) { enableEnvironmentService(environmentId: $e, serviceId: $s, availableRequests: 1000000) { availableRequests } }",
            {"e": eid, "s": sid},
            admin,
        )
        env_key = await s(
            "env key",
            'mutation($p: ID!, $e: ID!) { createApiKey(input: {projectId: $p, environmentId: $e, label: "env"}) { secret } }',
            {"p": pid, "e": eid},
            admin,
        )
        if key:
            self.keys["project-key"] = key["createApiKey"]["secret"]
        if env_key:
            self.keys["environment-key"] = env_key["createApiKey"]["secret"]
            ek = f"ApiKey {self.keys['environment-key']}"
            flow = await s(
                "flow",
                "mutation($s: String!) { startFlow(service: $s, amount: 3, ttlSeconds: 86000) { requestLog { id } reservation { id } } }",
                {"s": service_name},
                ek,
            )
            if flow:
                await s(
                    "step",
                    'mutation($s: String!, $p: ID!) { recordRequest(service: $s, endpoint: "/x", startPoint: $p) { id } }',
                    {"s": service_name, "p": flow["startFlow"]["requestLog"]["id"]},
                    ek,
                )
            await s("request", "mutation($s: String!) { recordRequest(service: $s) { id } }", {"s": service_name}, ek)
        if key:
            await s(
                "ingest",
                'mutation { ingestLogs(inputs: [{log: "a", level: INFO, idempotencyKey: "k1"}, {log: "b", level: WARN, attributes: {x: 1}}]) { ids } }',
                {},
                f"ApiKey {self.keys['project-key']}",
            )
        guild = await s(
            "guild",
            'mutation($d: String!) { upsertGuild(input: {discordId: $d, name: "fuzz guild", settings: {features: {chatBot: true}}}) { id } }',
            {"d": f"discord-{n}"},
            admin,
        )
        if guild:
            gid = guild["upsertGuild"]["id"]
            for member, roles in ((self.user_ids["user"], ["owner"]), (victim, ["member"])):
                await s(
                    "member",
                    "mutation($g: ID!, $u: ID!, $r: [String!]) { addGuildMember(guildId: $g, userId: $u, roles: $r) { roles } }",
                    {"g": gid, "u": member, "r": roles},
                    admin,
                )
            await s(
                "analysis",
                'mutation($g: ID!) { createClubAnalysis(input: {guildId: $g, title: "t", summary: "club summary", confidence: 0.7, images: [{imageUrl: "https://example.com/a.png", fileSize: 10}], metrics: [{name: "m", value: 1.5, unit: "u"}]}) { id } }',
                {"g": gid},
                user,
            )
            conv = await s("conversation", 'mutation { createConversation(title: "c") { id } }', {}, user)
            if conv:
                await s(
                    "message",
                    'mutation($c: ID!, $g: ID!) { postChatMessage(input: {conversationId: $c, guildId: $g, text: "hi"}) { id } }',
                    {"c": conv["createConversation"]["id"], "g": gid},
                    user,
                )
        for owner in (user, admin):
            wf = await s(
                "workflow",
                'mutation { createWorkflow(input: {name: "fuzz flow", tags: ["t"], isPublic: true, configuration: {a: 1}}) { id } }',
                {},
                owner,
            )
            if not wf:
                continue
            wid = wf["createWorkflow"]["id"]
            for node in ("a", "b", "c"):
                await s(
                    "node",
                    'mutation($w: ID!, $k: String!) { addWorkflowNode(workflowId: $w, input: {key: $k, type: "task"}) { id } }',
                    {"w": wid, "k": node},
                    owner,
                )
            await s(
                "edge",
                'mutation($w: ID!) { addWorkflowEdge(workflowId: $w, input: {source: "a", target: "b"}) { id } }',
                {"w": wid},
                owner,
            )
            await s("publish", "mutation($w: ID!) { publishWorkflow(id: $w) { id } }", {"w": wid}, owner)
            execution = await s(
                "execution",
                "mutation($w: ID!) { startExecution(workflowId: $w, input: {x: 1}) { id } }",
                {"w": wid},
                owner,
            )
            if execution:
                await s(
                    "execution log",
                    'mutation($x: ID!) { appendExecutionLog(executionId: $x, input: {level: INFO, message: "m", nodeKey: "a"}) { id } }',
                    {"x": execution["startExecution"]["id"]},
                    owner,
                )
            await s(
                "file",
                'mutation { registerFile(input: {filename: "f.txt", originalFilename: "f.txt", mimeType: "text/plain", size: 12}) { id } }',
                {},
                owner,
            )
            vendor = await s(
                "vendor", 'mutation { createVendor(input: {name: "taco", lat: 1.5, long: 2.5}) { id } }', {}, owner
            )
            if vendor:
                await s(
                    "location",
                    "mutation($v: ID!) { recordVendorLocation(vendorId: $v, lat: 1.6, long: 2.6) { id } }",
                    {"v": vendor["createVendor"]["id"]},
                    owner,
                )
            await s(
                "billing",
                'mutation { createBillingSubscription(input: {provider: "stripe", productId: "pro", startDate: "2026-01-01T00:00:00Z"}) { id } }',
                {},
                admin,  # billing:write: nobody grants themself a subscription
            )
        await s(
            "integration",
            'mutation($e: String!) { upsertIntegration(input: {service: "stripe", externalId: $e, internalId: "i", metadata: {a: 1}}) { id } }',
            {"e": f"ext-{n}"},
            admin,
        )
        await s(
            "role",
            'mutation($n: String!) { createRole(input: {name: $n, permissions: ["audit:read"]}) { id } }',
            {"n": f"fuzz-role-{n}"},
            admin,
        )
        await s(
            "session",
            "mutation($u: ID!) { createSession(userId: $u, ttlSeconds: 86000) { token } }",
            {"u": victim},
            admin,
        )
        await self.db.refresh(self.pools)
