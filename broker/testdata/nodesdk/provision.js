// Provisions one X.509 device with the official Azure IoT Node SDK
// (azure-iot-provisioning-device + -mqtt + azure-iot-security-x509) and
// prints one JSON line with the outcome. Run by broker/nodesdk_test.go:
//
//   NODE_EXTRA_CA_CERTS=server-ca.pem node provision.js HOST:PORT ID_SCOPE REG_ID CERT_CHAIN.pem KEY.pem
//
// The SDK verifies the broker's certificate against Node's CA store plus
// NODE_EXTRA_CA_CERTS (the test broker's server root).
'use strict';

const fs = require('fs');
const { Mqtt } = require('azure-iot-provisioning-device-mqtt');
const { X509Security } = require('azure-iot-security-x509');
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');

const [host, idScope, regId, certFile, keyFile] = process.argv.slice(2);
const started = Date.now();
// The answers the SDK acted on, as "register:<status>" and
// "poll:<status>", recorded by wrapping the transport's two request
// methods (the SDK's PollingTransport interface).
const statuses = [];

function done(out) {
  out.elapsedMs = Date.now() - started;
  out.statuses = statuses;
  process.stdout.write(JSON.stringify(out) + '\n');
  // The SDK disconnects before calling back; nothing else keeps running.
  process.exit(0);
}

const security = new X509Security(regId, {
  cert: fs.readFileSync(certFile, 'utf8'),
  key: fs.readFileSync(keyFile, 'utf8'),
});
const transport = new Mqtt();
for (const [method, label] of [['registrationRequest', 'register'], ['queryOperationStatus', 'poll']]) {
  const orig = transport[method].bind(transport);
  transport[method] = (...args) => {
    const cb = args.pop();
    orig(...args, (err, result, ...rest) => {
      statuses.push(label + ':' + (err ? 'error' : result && result.status));
      cb(err, result, ...rest);
    });
  };
}
const client = ProvisioningDeviceClient.create(host, idScope, transport, security);
setTimeout(() => done({ ok: false, error: 'timeout', name: 'Timeout' }), 45000).unref();
client.register((err, result) => {
  if (err) {
    done({ ok: false, error: String(err.message || err), name: err.name || '' });
    return;
  }
  done({
    ok: true,
    status: result.status,
    assignedHub: result.assignedHub,
    deviceId: result.deviceId,
    registrationId: result.registrationId,
  });
});
