/**
 * A consumer's whole flow from Node, printed as one JSON object:
 * the provider's identity, its environments, orders for the dataset and the
 * algorithm (those not yet paid for), the job started and watched to its
 * end, its log, and one result file downloaded and checked against the
 * provider-signed statement. Every request is signed by this SDK's Signer.
 *
 *     C2D_PRIVATE_KEY=0x... node dist/examples/run-job.js \
 *       --provider 127.0.0.1:50051 --dataset did:op:... --algorithm did:op:... \
 *       [--result result.json] [--out .] [--param name=value ...]
 *
 * Exits 0 when the job finished (70) and its result checked out, 1 when the
 * job failed, 2 on a usage mistake.
 */
import { join } from "node:path";
import { parseArgs } from "node:util";

import { EndReason, JobStatus, ProviderClient, Signer, type JsonValue } from "../src/index.js";

const USAGE =
  "usage: C2D_PRIVATE_KEY=0x... run-job --provider HOST:PORT --dataset DID --algorithm DID" +
  " [--dataset-service compute] [--algorithm-service access] [--result PATH] [--out DIR] [--param k=v ...]";

function usage(message: string): never {
  process.stderr.write(`${message}\n${USAGE}\n`);
  process.exit(2);
}

const { values: options } = parseArgs({
  options: {
    provider: { type: "string", default: "127.0.0.1:50051" },
    dataset: { type: "string" },
    "dataset-service": { type: "string", default: "compute" },
    algorithm: { type: "string" },
    "algorithm-service": { type: "string", default: "access" },
    result: { type: "string", default: "result.json" },
    out: { type: "string", default: "." },
    param: { type: "string", multiple: true, default: [] },
  },
});
const privateKey = process.env.C2D_PRIVATE_KEY ?? usage("set C2D_PRIVATE_KEY to the consumer's key (hex)");
const dataset = options.dataset ?? usage("--dataset is required");
const algorithm = options.algorithm ?? usage("--algorithm is required");
const parameters: { [name: string]: JsonValue } = {};
for (const pair of options.param) {
  const split = pair.indexOf("=");
  if (split < 1) {
    usage(`--param takes name=value, got ${JSON.stringify(pair)}`);
  }
  parameters[pair.slice(0, split)] = pair.slice(split + 1);
}

const client = ProviderClient.connect(options.provider, new Signer(privateKey));
const provider = await client.providerInfo();
const environments = await client.environments();
const environment = environments.find((e) => e.available) ?? usage("the provider has no available environment");

const request = await client.withOrders({
  dataset: { did: dataset, serviceId: options["dataset-service"] },
  algorithm: { did: algorithm, serviceId: options["algorithm-service"] },
  environmentId: environment.id,
  parameters,
});
const started = await client.startCompute(request);
const statuses: number[] = [started.status];
let job = started;
for await (const update of client.watch(started.jobId)) {
  job = update;
  if (statuses.at(-1) !== update.status) {
    statuses.push(update.status);
  }
}

const finished = job.status === JobStatus.FINISHED && job.endReason === EndReason.COMPLETED;
const log = await client.logText(job.jobId);
const downloaded = finished
  ? await client.downloadResult(job.jobId, { path: options.result }, join(options.out, `${job.jobId}-${options.result}`))
  : undefined;

process.stdout.write(
  `${JSON.stringify({
    address: client.signer.address,
    providerSigningKey: provider.signingPublicKey,
    environments: environments.map((e) => ({ id: e.id, available: e.available })),
    orders: {
      dataset: request.dataset.orderId,
      algorithm: "did" in request.algorithm ? request.algorithm.orderId : "",
    },
    jobId: job.jobId,
    owner: job.owner,
    statuses,
    status: job.status,
    endReason: job.endReason,
    errorMessage: job.errorMessage,
    log,
    result: downloaded && {
      path: downloaded.file.path,
      savedTo: downloaded.savedTo,
      size: Number(downloaded.file.size),
      sha256: downloaded.file.sha256,
    },
    lastNonce: client.signer.lastNonceGiven.toString(),
  })}\n`,
);
process.exitCode = finished ? 0 : 1;
