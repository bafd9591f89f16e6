/**
 * A typed client for the consumer's side of a provider: who the provider is,
 * environments, orders, starting a job, following it, its logs and its
 * results, checked against what the provider signed. Every call that acts
 * for the account is signed by its Signer (signing.ts).
 */
import { createWriteStream } from "node:fs";
import { rename, rm } from "node:fs/promises";
import { pipeline } from "node:stream/promises";

import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { createClient, type Client, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

import { C2dError, LinkError, asC2dError } from "./errors.js";
import type { AlgorithmContainer, Environment, Job, JobStatus } from "./gen/c2d/common/v1/common_pb.js";
import { AssetService } from "./gen/c2d/provider/v1/asset_pb.js";
import { LedgerService, StartOrderRequestSchema, type Order } from "./gen/c2d/provider/v1/ledger_pb.js";
import {
  ComputeSpecSchema,
  DeleteComputeRequestSchema,
  GetComputeResultLinkRequestSchema,
  GetComputeResultRequestSchema,
  GetJobDetailsRequestSchema,
  InitializeComputeRequestSchema,
  ListJobsRequestSchema,
  ProviderService,
  StartComputeRequestSchema,
  StopComputeRequestSchema,
  StreamJobLogsRequestSchema,
  WatchJobRequestSchema,
  type ComputeSpec,
  type GetComputeResultLinkResponse,
  type GetJobDetailsResponse,
  type OrderRequirement,
} from "./gen/c2d/provider/v1/provider_pb.js";
import { checkedChunks, verifyResultsStatement, type ResultsStatement, type SignedResultFile } from "./results.js";
import type { JsonValue } from "./canonical.js";
import type { Signer } from "./signing.js";

/** The provider's identity: where orders pay to, and its public keys (hex). */
export interface ProviderInfo {
  feeAddress: string;
  encryptionPublicKey: string;
  signingPublicKey: string;
}

/** An asset's service, and the order that pays for it (empty: none yet). */
export interface AssetRef {
  did: string;
  serviceId: string;
  orderId?: string;
}

/** Code the consumer sends instead of a registered algorithm (if the dataset allows it). */
export interface RawAlgorithm {
  code: string;
  container: Pick<AlgorithmContainer, "entrypoint" | "image" | "tag" | "checksum">;
}

/** What to run: the datasets, the algorithm, where, and with which parameters. */
export interface ComputeRequest {
  dataset: AssetRef;
  additionalDatasets?: AssetRef[];
  algorithm: AssetRef | RawAlgorithm;
  environmentId: string;
  /** The algorithm's parameters (written to /data/inputs/algoCustomData.json). */
  parameters?: { [name: string]: JsonValue };
  /** Granted only if every dataset allows network access. */
  allowNetwork?: boolean;
  /** Caps the algorithm's run time (0 or unset: the environment's maximum). */
  maxDurationSeconds?: number;
  publishResultsAsAsset?: boolean;
  /** Other addresses allowed to read the job. */
  viewers?: string[];
  /** Publish the outputs as one tar file. */
  packOutputs?: boolean;
}

/** A result file saved to disk, after its size and sha256 matched the signed statement. */
export interface DownloadedResult {
  file: SignedResultFile;
  savedTo: string;
}

/** Which result file: by its index in the manifest, or by its path. */
export type ResultSelector = { index: number } | { path: string };

/** How to read a result file. */
export interface DownloadOptions {
  /**
   * Read it straight from its storage through the short-lived link the
   * provider offers (S3, an IPFS gateway); false, or no link offered:
   * stream it through the provider. Default true.
   */
  direct?: boolean;
}

export interface ClientOptions {
  /**
   * The provider's Ed25519 key (hex) that result statements must be signed
   * with. Unset: the key GetProviderInfo answers, asked once.
   */
  signingPublicKey?: string;
}

export class ProviderClient {
  readonly compute: Client<typeof ProviderService>;
  readonly assets: Client<typeof AssetService>;
  readonly ledger: Client<typeof LedgerService>;
  private signingPublicKey: string | undefined;

  constructor(
    transport: Transport,
    readonly signer: Signer,
    options: ClientOptions = {},
  ) {
    this.compute = createClient(ProviderService, transport);
    this.assets = createClient(AssetService, transport);
    this.ledger = createClient(LedgerService, transport);
    this.signingPublicKey = options.signingPublicKey;
  }

  /** A client over gRPC (HTTP/2) to `address`: "host:port" (plaintext) or an http(s):// URL. */
  static connect(address: string, signer: Signer, options: ClientOptions = {}): ProviderClient {
    const baseUrl = /^https?:\/\//.test(address) ? address : `http://${address}`;
    return new ProviderClient(createGrpcTransport({ baseUrl }), signer, options);
  }

  // -- public ---------------------------------------------------------------------

  async providerInfo(): Promise<ProviderInfo> {
    const { feeAddress, encryptionPublicKey, signingPublicKey } = await rpc(this.compute.getProviderInfo({}));
    return { feeAddress, encryptionPublicKey, signingPublicKey };
  }

  /** The last nonce `address` (by default this account) used; 0n if none. */
  async lastNonce(address: string = this.signer.address): Promise<bigint> {
    return (await rpc(this.compute.getNonce({ address }))).nonce;
  }

  /** The compute environments, with their live capacity. */
  async environments(): Promise<Environment[]> {
    return (await rpc(this.compute.listComputeEnvironments({}))).environments;
  }

  // -- orders -----------------------------------------------------------------------

  /** Pays one datatoken for one use of an asset's service. */
  async order(did: string, serviceId: string): Promise<Order> {
    const request = this.signer.sign("StartOrder", create(StartOrderRequestSchema, { did, serviceId }));
    const { order } = await rpc(this.ledger.startOrder(request));
    if (order === undefined) {
      throw new TypeError("StartOrder answered without an order");
    }
    return order;
  }

  /** Runs every check of startCompute without starting anything; says what each asset needs paid. */
  async initializeCompute(request: ComputeRequest): Promise<OrderRequirement[]> {
    const signed = this.signer.sign(
      "InitializeCompute",
      create(InitializeComputeRequestSchema, { spec: computeSpec(request) }),
    );
    return (await rpc(this.compute.initializeCompute(signed))).orders;
  }

  /**
   * `request` with an order for each asset that has none: a valid unused
   * order this account already holds, or a new one.
   */
  async withOrders(request: ComputeRequest): Promise<ComputeRequest> {
    const requirements = await this.initializeCompute(request);
    const orderIds = new Map<string, string>();
    for (const requirement of requirements) {
      const orderId =
        requirement.validOrderId || (await this.order(requirement.did, requirement.serviceId)).orderId;
      orderIds.set(`${requirement.did} ${requirement.serviceId}`, orderId);
    }
    const ordered = (asset: AssetRef): AssetRef => ({
      ...asset,
      orderId: asset.orderId || orderIds.get(`${asset.did} ${asset.serviceId}`),
    });
    return {
      ...request,
      dataset: ordered(request.dataset),
      additionalDatasets: request.additionalDatasets?.map(ordered),
      algorithm: "did" in request.algorithm ? ordered(request.algorithm) : request.algorithm,
    };
  }

  // -- jobs -------------------------------------------------------------------------

  /** Starts a job; its assets must carry their orders (see withOrders). */
  async startCompute(request: ComputeRequest): Promise<Job> {
    const signed = this.signer.sign("StartCompute", create(StartComputeRequestSchema, { spec: computeSpec(request) }));
    const { job } = await rpc(this.compute.startCompute(signed));
    if (job === undefined) {
      throw new TypeError("StartCompute answered without the job");
    }
    return job;
  }

  /** The job, and the provider's signed results statement once it has results. */
  async jobDetails(jobId: string): Promise<GetJobDetailsResponse> {
    const request = this.signer.sign("GetJobDetails", create(GetJobDetailsRequestSchema, { jobId }));
    return rpc(this.compute.getJobDetails(request));
  }

  /** The job after each status change, until it ends (the server closes the stream then). */
  async *watch(jobId: string, afterSequence = 0n): AsyncGenerator<Job> {
    const request = this.signer.sign("WatchJob", create(WatchJobRequestSchema, { jobId, afterSequence }));
    for await (const { job } of stream(this.compute.watchJob(request))) {
      if (job !== undefined) {
        yield job;
      }
    }
  }

  /** This account's jobs (all pages), only those in `statuses` when given. */
  async listJobs(statuses: JobStatus[] = []): Promise<Job[]> {
    const jobs: Job[] = [];
    let pageToken = "";
    do {
      const request = this.signer.sign("ListJobs", create(ListJobsRequestSchema, { statuses, pageToken }));
      const page = await rpc(this.compute.listJobs(request));
      jobs.push(...page.jobs);
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    return jobs;
  }

  async stopCompute(jobId: string): Promise<Job | undefined> {
    const request = this.signer.sign("StopCompute", create(StopComputeRequestSchema, { jobId }));
    return (await rpc(this.compute.stopCompute(request))).job;
  }

  async deleteCompute(jobId: string): Promise<void> {
    await rpc(this.compute.deleteCompute(this.signer.sign("DeleteCompute", create(DeleteComputeRequestSchema, { jobId }))));
  }

  /** The algorithm's log, chunk by chunk; with `follow`, until the algorithm ends. */
  async *logs(jobId: string, options: { follow?: boolean; offset?: bigint } = {}): AsyncGenerator<Uint8Array> {
    const request = this.signer.sign(
      "StreamJobLogs",
      create(StreamJobLogsRequestSchema, { jobId, follow: options.follow ?? false, offset: options.offset ?? 0n }),
    );
    for await (const chunk of stream(this.compute.streamJobLogs(request))) {
      yield chunk.data;
    }
  }

  /** The algorithm's whole log so far, as text. */
  async logText(jobId: string): Promise<string> {
    const chunks: Uint8Array[] = [];
    for await (const chunk of this.logs(jobId)) {
      chunks.push(chunk);
    }
    return Buffer.concat(chunks).toString("utf8");
  }

  // -- results ----------------------------------------------------------------------

  /** The job's results statement, once the provider's signature of it checks out. */
  async verifiedResults(jobId: string): Promise<ResultsStatement> {
    const details = await this.jobDetails(jobId);
    const statement = verifyResultsStatement(details.signedResults, await this.providerSigningKey());
    if (statement.jobId !== jobId) {
      throw new TypeError(`asked for the results of job ${jobId}, the statement is about job ${statement.jobId}`);
    }
    return statement;
  }

  /**
   * Downloads one result file to `destination`, through its link when the
   * provider offers one (see DownloadOptions). The bytes go to
   * `<destination>.part` first and take its name only once their size and
   * sha256 match the provider-signed statement (an IntegrityError otherwise,
   * and nothing is left behind).
   */
  async downloadResult(
    jobId: string,
    which: ResultSelector,
    destination: string,
    options: DownloadOptions = {},
  ): Promise<DownloadedResult> {
    const file = pick(await this.verifiedResults(jobId), which);
    const partial = `${destination}.part`;
    try {
      const chunks = await this.fileChunks(jobId, file, options);
      await pipeline(checkedChunks(file, chunks), createWriteStream(partial));
      await rename(partial, destination);
    } catch (error) {
      await rm(partial, { force: true });
      throw error;
    }
    return { file, savedTo: destination };
  }

  /** One result file in memory, checked as downloadResult checks it. */
  async resultBytes(
    jobId: string,
    which: ResultSelector,
    options: DownloadOptions = {},
  ): Promise<{ file: SignedResultFile; data: Buffer }> {
    const file = pick(await this.verifiedResults(jobId), which);
    const chunks: Uint8Array[] = [];
    for await (const chunk of checkedChunks(file, await this.fileChunks(jobId, file, options))) {
      chunks.push(chunk);
    }
    return { file, data: Buffer.concat(chunks) };
  }

  /**
   * A short-lived link that reads one result file straight from its storage
   * (`url` empty when the storage offers none), with the file's entry and
   * the provider-signed results statement.
   */
  async resultLink(jobId: string, index: number): Promise<GetComputeResultLinkResponse> {
    const request = this.signer.sign(
      "GetComputeResultLink",
      create(GetComputeResultLinkRequestSchema, { jobId, index }),
    );
    return rpc(this.compute.getComputeResultLink(request));
  }

  /** The file's chunks: through its link when there is one (and `direct`), else streamed. */
  private async fileChunks(
    jobId: string,
    file: SignedResultFile,
    options: DownloadOptions,
  ): Promise<AsyncIterable<{ offset: bigint; data: Uint8Array }>> {
    let url = "";
    if (options.direct ?? true) {
      try {
        url = (await this.resultLink(jobId, file.index)).url;
      } catch (error) {
        // a provider from before GetComputeResultLink: stream
        if (!(error instanceof C2dError && error.status === "UNIMPLEMENTED")) {
          throw error;
        }
      }
    }
    const response = url === "" ? undefined : await openLink(url, file);
    // no link, or its storage did not answer (an endpoint only the provider reaches): stream
    return response === undefined ? this.resultChunks(jobId, file.index) : linkChunks(response);
  }

  private async *resultChunks(jobId: string, index: number): AsyncGenerator<{ offset: bigint; data: Uint8Array }> {
    const request = this.signer.sign("GetComputeResult", create(GetComputeResultRequestSchema, { jobId, index }));
    yield* stream(this.compute.getComputeResult(request));
  }

  private async providerSigningKey(): Promise<string> {
    this.signingPublicKey ??= (await this.providerInfo()).signingPublicKey;
    return this.signingPublicKey;
  }
}

/**
 * The answer of a result's link; undefined when its storage does not answer
 * at all, a LinkError when it refuses (expired, altered). Whatever answers is
 * not trusted: checkedChunks holds the bytes to the signed size and sha256.
 */
async function openLink(url: string, file: SignedResultFile): Promise<Response | undefined> {
  if (!/^https?:\/\//.test(url)) {
    throw new LinkError(`the provider offered a link that is not http(s): ${url.slice(0, 40)}`);
  }
  let response: Response;
  try {
    response = await fetch(url, { redirect: "follow" });
  } catch {
    return undefined;
  }
  if (!response.ok || response.body === null) {
    const body = await response.text();
    const why = /<Message>([^<]*)<\/Message>/.exec(body)?.[1] ?? response.statusText;
    throw new LinkError(
      `${file.path}: the result link was refused (HTTP ${response.status}: ${why}); links are short-lived: ask for a new one`,
    );
  }
  return response;
}

/** A link's answer as chunks with their offsets. */
async function* linkChunks(response: Response): AsyncGenerator<{ offset: bigint; data: Uint8Array }> {
  let offset = 0n;
  for await (const data of response.body ?? []) {
    yield { offset, data };
    offset += BigInt(data.length);
  }
}

function pick(statement: ResultsStatement, which: ResultSelector): SignedResultFile {
  const file = statement.files.find((f) => ("index" in which ? f.index === which.index : f.path === which.path));
  if (file === undefined) {
    const names = statement.files.map((f) => `${f.index}: ${f.path}`).join(", ");
    throw new RangeError(`job ${statement.jobId} has no result ${JSON.stringify(which)}; it has ${names}`);
  }
  return file;
}

function computeSpec(request: ComputeRequest): ComputeSpec {
  const asset = ({ did, serviceId, orderId }: AssetRef) => ({ did, serviceId, orderId: orderId ?? "" });
  const algorithm: MessageInitShape<typeof ComputeSpecSchema>["algorithm"] =
    "did" in request.algorithm
      ? { case: "algorithmAsset", value: asset(request.algorithm) }
      : { case: "rawAlgorithm", value: request.algorithm };
  return create(ComputeSpecSchema, {
    dataset: asset(request.dataset),
    additionalDatasets: (request.additionalDatasets ?? []).map(asset),
    algorithm,
    environmentId: request.environmentId,
    algorithmParametersJson: request.parameters === undefined ? "" : JSON.stringify(request.parameters),
    allowNetwork: request.allowNetwork ?? false,
    maxDurationSeconds: BigInt(request.maxDurationSeconds ?? 0),
    publishResultsAsAsset: request.publishResultsAsAsset ?? false,
    viewers: request.viewers ?? [],
    packOutputs: request.packOutputs ?? false,
  });
}

/** A unary call's answer, its failure as a C2dError. */
async function rpc<T>(call: Promise<T>): Promise<T> {
  try {
    return await call;
  } catch (error) {
    throw asC2dError(error);
  }
}

/** A server stream's messages, its failure as a C2dError. */
async function* stream<T>(messages: AsyncIterable<T>): AsyncGenerator<T> {
  try {
    yield* messages;
  } catch (error) {
    throw asC2dError(error);
  }
}
