/**
 * The gateway's Prometheus metrics, in a registry of their own (one per app: tests build many
 * apps in one process, and prom-client's global registry would have them collide).
 *
 * The label rule: no label ever carries a secret or a value a client chose. Every label is one
 * of a fixed set written in this code or in the method tables: a JSON-RPC method is its own
 * name only when `knownMethod` says the gateway or the engine defines it, else `other`; an
 * upgrade reason is the fixed wording of the auth decision; an HTTP route is the route's
 * pattern, never the URL. State that already lives elsewhere (open connections, the engine,
 * remote control) is read when scraped, so nothing here has to be kept in step with it.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client'
import type { RequestObserver, RequestOutcome } from '../rpc/session.js'

/** What the gauges read at each scrape. */
export interface MetricSources {
  readonly websocketConnections: () => number
  readonly sessions: () => number
  readonly engineState: () => string
  readonly engineRestarts: () => number
  readonly remoteControlStatus: () => string
}

export const ENGINE_STATES = ['off', 'starting', 'running', 'restarting', 'unavailable'] as const
export const REMOTE_CONTROL_STATUSES = ['disabled', 'connecting', 'connected', 'errored'] as const


export type RateLimitName = 'http' | 'failed_upgrades'

const LATENCY_BUCKETS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120]

export class GatewayMetrics implements RequestObserver {
  readonly registry = new Registry()
  private readonly upgrades: Counter<'outcome' | 'reason'>
  private readonly requests: Counter<'method' | 'outcome'>
  private readonly requestSeconds: Histogram<'method'>
  private readonly httpSeconds: Histogram<'route' | 'status'>
  private readonly rateLimited: Counter<'limit'>
  private readonly slowConsumers: Counter

  constructor(
    sources: MetricSources,
    private readonly knownMethod: (method: string) => boolean,
  ) {
    const registers = [this.registry]
    collectDefaultMetrics({ register: this.registry })
    this.upgrades = new Counter({ name: 'app_server_upgrades_total', help: 'WebSocket upgrade decisions', labelNames: ['outcome', 'reason'], registers })
    this.requests = new Counter({ name: 'app_server_rpc_requests_total', help: 'JSON-RPC requests answered', labelNames: ['method', 'outcome'], registers })
    this.requestSeconds = new Histogram({
      name: 'app_server_rpc_request_duration_seconds',
      help: 'Time from a JSON-RPC request to its answer',
      labelNames: ['method'],
      buckets: LATENCY_BUCKETS,
      registers,
    })
    this.httpSeconds = new Histogram({
      name: 'app_server_http_request_duration_seconds',
      help: 'HTTP requests (probes, metrics, refused upgrades) by route pattern and status',
      labelNames: ['route', 'status'],
      buckets: LATENCY_BUCKETS,
      registers,
    })
    this.rateLimited = new Counter({ name: 'app_server_rate_limited_total', help: 'Requests refused by a rate limit', labelNames: ['limit'], registers })
    this.slowConsumers = new Counter({ name: 'app_server_slow_consumer_closes_total', help: 'Connections closed 1008 for not reading', registers })
    new Gauge({
      name: 'app_server_websocket_connections_open',
      help: 'Local WebSocket connections open',
      registers,
      collect() {
        this.set(sources.websocketConnections())
      },
    })
    new Gauge({
      name: 'app_server_sessions_open',
      help: 'JSON-RPC sessions open, local and remote-control',
      registers,
      collect() {
        this.set(sources.sessions())
      },
    })
    new Gauge({
      name: 'app_server_engine_state',
      help: 'The engine state (1 for the current one)',
      labelNames: ['state'],
      registers,
      collect() {
        oneHot(this, 'state', ENGINE_STATES, sources.engineState())
      },
    })
    new Counter({
      name: 'app_server_engine_restarts_total',
      help: 'Engine restarts scheduled after a crash, hang or failed start',
      registers,
      collect() {
        this.reset()
        this.inc(sources.engineRestarts())
      },
    })
    new Gauge({
      name: 'app_server_remote_control_status',
      help: 'The remote-control status (1 for the current one)',
      labelNames: ['status'],
      registers,
      collect() {
        oneHot(this, 'status', REMOTE_CONTROL_STATUSES, sources.remoteControlStatus())
      },
    })
  }

  upgrade(outcome: 'accepted' | 'degraded' | 'rejected', reason: string): void {
    this.upgrades.inc({ outcome, reason })
  }

  requestAnswered(method: string, outcome: RequestOutcome, ms: number): void {
    const label = this.knownMethod(method) ? method : 'other'
    this.requests.inc({ method: label, outcome: outcome.kind === 'error' ? String(outcome.code) : outcome.kind })
    this.requestSeconds.observe({ method: label }, ms / 1000)
  }

  httpAnswered(route: string, status: number, ms: number): void {
    this.httpSeconds.observe({ route, status: String(status) }, ms / 1000)
  }

  refused(limit: RateLimitName): void {
    this.rateLimited.inc({ limit })
  }

  slowConsumerClosed(): void {
    this.slowConsumers.inc()
  }

  /** The exposition text and its content type. */
  async scrape(): Promise<{ contentType: string; text: string }> {
    return { contentType: this.registry.contentType, text: await this.registry.metrics() }
  }
}

/** One series per possible value, 1 for the current one: the usual Prometheus form of a state. */
function oneHot(gauge: Gauge<string>, label: string, values: readonly string[], current: string): void {
  for (const v of values) gauge.set({ [label]: v }, v === current ? 1 : 0)
}
