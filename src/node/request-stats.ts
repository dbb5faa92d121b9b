// NBD request statistics as plain numbers per volume and operation. The data path adds to them for
// every request; prom-client hashed its label set on every inc() and observe() (string building
// and map lookups that profiles showed per request), so the Prometheus series are computed from
// these numbers only when /metrics is scraped: the same counters and histogram as before.
import type * as client from 'prom-client';
import type { NbdCommandName } from '../nbd/types';

export const latencyBucketsSeconds = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

/** One volume's one operation. */
export class OpStats {
  ok = 0;
  failed = 0;
  bytes = 0;
  latencySum = 0;
  /** Requests per latency bucket (not cumulative); the last slot counts those above every bound. */
  readonly latencyCounts = new Float64Array(latencyBucketsSeconds.length + 1);

  record(bytes: number, seconds: number, errno: number): void {
    if (errno === 0) {
      this.ok++;
      this.bytes += bytes;
    } else {
      this.failed++;
    }
    this.latencySum += seconds;
    let i = 0;
    while (i < latencyBucketsSeconds.length && seconds > latencyBucketsSeconds[i]!) i++;
    this.latencyCounts[i]!++;
  }
}

/** One sample of a metric as prom-client's registry reads it. */
interface Sample {
  metricName: string;
  labels: Record<string, string | number>;
  value: number;
}

export class RequestStats {
  private readonly byVolume = new Map<string, Map<NbdCommandName, OpStats>>();

  of(volume: string, op: NbdCommandName): OpStats {
    let byOp = this.byVolume.get(volume);
    if (!byOp) {
      byOp = new Map();
      this.byVolume.set(volume, byOp);
    }
    let s = byOp.get(op);
    if (!s) {
      s = new OpStats();
      byOp.set(op, s);
    }
    return s;
  }

  forget(volume: string): void {
    this.byVolume.delete(volume);
  }

  *entries(): Generator<{ volume: string; op: NbdCommandName; stats: OpStats }> {
    for (const [volume, byOp] of this.byVolume) for (const [op, stats] of byOp) yield { volume, op, stats };
  }

  /** A histogram metric for prom-client's registry whose series are read from these numbers when scraped. */
  latencyHistogram(name: string, help: string): client.Metric<string> {
    const entries = (): ReturnType<RequestStats['entries']> => this.entries();
    const metric = {
      name,
      help,
      type: 'histogram' as const,
      aggregator: 'sum' as const,
      get: () => {
        const values: Sample[] = [];
        for (const { volume, op, stats } of entries()) {
          let cumulative = 0;
          latencyBucketsSeconds.forEach((le, i) => {
            cumulative += stats.latencyCounts[i]!;
            values.push({ metricName: `${name}_bucket`, labels: { volume, op, le }, value: cumulative });
          });
          cumulative += stats.latencyCounts[latencyBucketsSeconds.length]!;
          values.push({ metricName: `${name}_bucket`, labels: { volume, op, le: '+Inf' }, value: cumulative });
          values.push({ metricName: `${name}_sum`, labels: { volume, op }, value: stats.latencySum });
          values.push({ metricName: `${name}_count`, labels: { volume, op }, value: cumulative });
        }
        return { name, help, type: 'histogram', aggregator: 'sum', values };
      },
      reset: (): void => undefined,
    };
    // prom-client's registry only reads name, help, type and get() of what it holds.
    return metric as unknown as client.Metric<string>;
  }
}
