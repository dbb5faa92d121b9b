// Security events: refusals on a node's listeners (a peer that fails authentication, a client that
// breaks the protocol, one connection too many) become events, rate-limited and aggregated per
// remote address, so an attack shows in the event journal but cannot flood it. The first few
// refusals per address and window are events of their own; the rest are counted and reported as one
// summary per address when the window ends ("… and 1,250 more from 10.0.0.7 in the last minute").
// Knows nothing of sockets or protocols: callers classify a refusal, this module only limits.
import { invariant } from './errors';

export interface SecurityEventLimits {
  /** Length of one aggregation window; it opens at the first refusal after the previous one closed. */
  windowMs: number;
  /** Refusals of one kind from one address recorded as events of their own in a window. */
  eventsPerAddressPerWindow: number;
  /** Events of their own in a window over all addresses (an attack from many addresses). */
  eventsPerWindow: number;
  /** Addresses counted one by one in a window; refusals from further addresses share one summary. */
  addressesPerWindow: number;
}

export const defaultSecurityEventLimits: SecurityEventLimits = {
  windowMs: 60_000,
  eventsPerAddressPerWindow: 5,
  eventsPerWindow: 50,
  addressesPerWindow: 100,
};

/** Attacker-chosen text (export names, node names) is cut to this length before it is kept. */
export const maxSecurityEventTextChars = 200;
/** How often an open window is checked for its end (at most; shorter windows are checked sooner). */
export const securitySweepIntervalMs = 1000;

export interface Refusal {
  /** Event kind, e.g. `replication-refused`. */
  kind: string;
  /** Remote IP address, without the port. */
  address: string;
  /** One of a small fixed set of labels (also a metric label), e.g. `bad-checksum`. */
  reason: string;
  /** The event subject; the address unless given (an access denial names the volume). */
  subject?: string | undefined;
  /** What happened, for a human. */
  message: string;
  details?: Record<string, unknown> | undefined;
}

export type SecurityEventSink = (kind: string, subject: string, reason: string, details: Record<string, unknown>) => void;

interface Source {
  kind: string;
  /** The address, or undefined for the shared bucket of addresses beyond `addressesPerWindow`. */
  address: string | undefined;
  recorded: number;
  suppressed: number;
  byReason: Map<string, number>;
}

interface Window {
  openedAt: number;
  recorded: number;
  /** Addresses counted one by one so far. */
  addresses: number;
  sources: Map<string, Source>;
}

const otherAddresses = '(other addresses)';

export class SecurityEventLimiter {
  private window: Window | undefined;
  private sweeper: NodeJS.Timeout | undefined;

  constructor(
    private readonly sink: SecurityEventSink,
    private readonly limits: SecurityEventLimits = defaultSecurityEventLimits,
    private readonly now: () => number = Date.now,
  ) {
    invariant(limits.windowMs > 0, 'the security event window must be positive');
    invariant(limits.eventsPerAddressPerWindow >= 1 && limits.eventsPerAddressPerWindow <= limits.eventsPerWindow,
      'events per address must be at least 1 and at most the events per window');
    invariant(limits.addressesPerWindow >= 1, 'at least one address must be counted per window');
  }

  record(refusal: Refusal): void {
    this.sweep();
    const window = this.window ?? this.open();
    const address = normalizeAddress(refusal.address);
    let source = window.sources.get(sourceKey(refusal.kind, address));
    if (!source) {
      if (window.addresses >= this.limits.addressesPerWindow) {
        source = this.sharedSource(window, refusal.kind);
      } else {
        window.addresses++;
        source = { kind: refusal.kind, address, recorded: 0, suppressed: 0, byReason: new Map() };
        window.sources.set(sourceKey(refusal.kind, address), source);
      }
    }
    if (source.address !== undefined && source.recorded < this.limits.eventsPerAddressPerWindow && window.recorded < this.limits.eventsPerWindow) {
      source.recorded++;
      window.recorded++;
      this.sink(refusal.kind, clip(refusal.subject ?? address), clip(refusal.message),
        { ...clipStrings(refusal.details ?? {}), remote: address, refusal: refusal.reason });
      return;
    }
    source.suppressed++;
    source.byReason.set(refusal.reason, (source.byReason.get(refusal.reason) ?? 0) + 1);
  }

  /** Reports the summaries of a window that has ended. Runs on a timer and before each refusal. */
  sweep(): void {
    if (this.window && this.now() - this.window.openedAt >= this.limits.windowMs) this.close();
  }

  /** Reports what the open window suppressed so far, now (the node is stopping). */
  flush(): void {
    if (this.window) this.close();
  }

  start(): void {
    if (this.sweeper) return;
    this.sweeper = setInterval(() => this.sweep(), Math.min(securitySweepIntervalMs, Math.max(50, this.limits.windowMs / 4)));
    this.sweeper.unref();
  }

  stop(): void {
    clearInterval(this.sweeper);
    this.sweeper = undefined;
    this.flush();
  }

  private open(): Window {
    this.window = { openedAt: this.now(), recorded: 0, addresses: 0, sources: new Map() };
    return this.window;
  }

  /** One source per kind for the addresses beyond those counted one by one. */
  private sharedSource(window: Window, kind: string): Source {
    const key = sourceKey(kind, otherAddresses);
    let source = window.sources.get(key);
    if (!source) {
      source = { kind, address: undefined, recorded: 0, suppressed: 0, byReason: new Map() };
      window.sources.set(key, source);
    }
    return source;
  }

  private close(): void {
    const window = this.window!;
    this.window = undefined;
    const span = describeWindow(Math.min(this.limits.windowMs, this.now() - window.openedAt));
    for (const s of window.sources.values()) {
      if (s.suppressed === 0) continue;
      const from = s.address ?? `addresses beyond the ${this.limits.addressesPerWindow} counted one by one`;
      const reasons = [...s.byReason].sort((a, b) => b[1] - a[1]);
      this.sink(s.kind, s.address ?? otherAddresses,
        `… and ${formatCount(s.suppressed)} more from ${from} in the last ${span} (${reasons.map(([r, n]) => `${r} ${formatCount(n)}`).join(', ')})`,
        { remote: s.address ?? null, suppressed: s.suppressed, refusals: Object.fromEntries(reasons), windowSeconds: this.limits.windowMs / 1000 });
    }
  }
}

/** IPv4 clients of a dual-stack listener appear as ::ffff:a.b.c.d; operators know them as a.b.c.d. */
export function normalizeAddress(address: string): string {
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}

function sourceKey(kind: string, address: string): string {
  return `${kind}\0${address}`;
}

function clip(text: string): string {
  return text.length <= maxSecurityEventTextChars ? text : `${text.slice(0, maxSecurityEventTextChars - 1)}…`;
}

function clipStrings(details: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(details).map(([k, v]) => [k, typeof v === 'string' ? clip(v) : v]));
}

function formatCount(n: number): string {
  return n.toLocaleString('en-US');
}

function describeWindow(ms: number): string {
  if (ms >= 60_000 && ms % 60_000 === 0) return ms === 60_000 ? 'minute' : `${ms / 60_000} minutes`;
  const seconds = Math.max(1, Math.round(ms / 1000));
  return seconds === 1 ? 'second' : `${seconds} seconds`;
}
