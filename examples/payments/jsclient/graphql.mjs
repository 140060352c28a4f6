// node graphql.mjs http://127.0.0.1:8080 <chargeId>
// A plain GraphQL query over HTTP (fetch), a bad query, and a subscription
// over graphql-transport-ws (the graphql-ws client). Prints one JSON object.
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const base = process.argv[2];
const id = process.argv[3];
const out = {};

const post = async (query, variables) => {
  const r = await fetch(base + '/graphql', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ query, variables }),
  });
  return r.json();
};

out.query = await post('query($id: String) { payments_v1_GetCharge(id: $id) { charge { id status amount { amountMinor currency } } } }', { id });
out.notFound = await post('{ payments_v1_GetCharge(id: "nope") { charge { id } } }');

const client = createClient({ url: base.replace(/^http/, 'ws') + '/graphql', webSocketImpl: WebSocket, retryAttempts: 0 });
const events = [];
const done = new Promise((resolve, reject) => {
  client.subscribe(
    { query: 'subscription { payments_v1_WatchCharges(limit: 2) { type charge { id amount { amountMinor } } } }' },
    { next: (v) => events.push(v), error: reject, complete: resolve },
  );
});
// Charge until the subscription has seen two events (it starts empty and
// may open after the first charges): bounded, no fixed sleep.
let finished = false;
done.then(() => { finished = true; }, () => { finished = true; });
for (let n = 101; !finished && n < 200; n++) {
  await post('mutation($n: String) { payments_v1_Charge(amount: {currency: "USD", amountMinor: $n}) { charge { id } } }', { n: String(n) });
  await new Promise((r) => setTimeout(r, 100));
}
await done;
out.events = events;
await client.dispose();
console.log(JSON.stringify(out));
