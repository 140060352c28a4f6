// node soap.mjs http://127.0.0.1:8080 <chargeId>
// The npm soap client reads the generated WSDL and calls GetCharge (found
// and not found). Prints one JSON object.
import soap from 'soap';

const base = process.argv[2];
const id = process.argv[3];
const client = await soap.createClientAsync(base + '/soap/payments.v1.PaymentService?wsdl');
const out = {};
const [res] = await client.GetChargeAsync({ id });
out.found = res;
try {
  await client.GetChargeAsync({ id: 'nope' });
  out.notFound = 'no fault';
} catch (e) {
  out.notFound = { status: e.response && e.response.status, fault: e.root && e.root.Envelope.Body.Fault };
}
console.log(JSON.stringify(out));
