// Runs one query twice through Apollo Client's persisted-query link against a Lodge server and
// prints, as one JSON object, every HTTP request the link made and what it got back.
//
//   node apollo_apq.mjs <node_modules parent> <GraphQL URL> <GET|POST> <query> <variables JSON>
//
// Apollo Client is loaded from the tests' own tool directory (the first argument), not from a
// node_modules next to this file: the packages are installed there by the test.
import { createHash } from "node:crypto";
import { createRequire } from "node:module";
import { join } from "node:path";

const [toolsDir, url, method, query, variablesJson] = process.argv.slice(2);
const require = createRequire(join(toolsDir, "package.json"));
const { ApolloClient, HttpLink, InMemoryCache, gql } = require("@apollo/client/core");
const { createPersistedQueryLink } = require("@apollo/client/link/persisted-queries");

const exchanges = [];

// The link's fetch, recording each request (method, URL, body) and the answer (status, body).
async function recordingFetch(input, init = {}) {
  const response = await fetch(input, init);
  const text = await response.clone().text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = text;
  }
  exchanges.push({
    method: init.method ?? "GET",
    url: String(input),
    body: typeof init.body === "string" ? JSON.parse(init.body) : null,
    status: response.status,
    response: body,
  });
  return response;
}

const link = createPersistedQueryLink({
  sha256: (text) => createHash("sha256").update(text).digest("hex"),
  useGETForHashedQueries: method === "GET",
}).concat(new HttpLink({ uri: url, fetch: recordingFetch }));
const client = new ApolloClient({ link, cache: new InMemoryCache() });

const document = gql(query);
const variables = JSON.parse(variablesJson);
const results = [];
for (let run = 0; run < 2; run++) {
  try {
    const result = await client.query({ query: document, variables, fetchPolicy: "network-only" });
    results.push({ data: result.data, errors: result.errors ?? null });
  } catch (error) {
    results.push({ data: null, errors: [String(error)], networkError: error.networkError?.result ?? null });
  }
}
process.stdout.write(JSON.stringify({ exchanges, results }) + "\n");
