// Rate limiting and aggregation of security events, on an injected clock.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  SecurityEventLimiter, defaultSecurityEventLimits, maxSecurityEventTextChars, normalizeAddress, type SecurityEventLimits,
} from '../../src/common/security-events';

interface Emitted {
  kind: string;
  subject: string;
  reason: string;
  details: Record<string, unknown>;
}

function limiter(limits: Partial<SecurityEventLimits> = {}): { l: SecurityEventLimiter; events: Emitted[]; clock: { t: number } } {
  const events: Emitted[] = [];
  const clock = { t: 1_000_000 };
  const l = new SecurityEventLimiter((kind, subject, reason, details) => events.push({ kind, subject, reason, details }),
    { ...defaultSecurityEventLimits, ...limits }, () => clock.t);
  return { l, events, clock };
}

const refuse = (l: SecurityEventLimiter, address: string, reason = 'bad-frame', kind = 'replication-refused'): void =>
  l.record({ kind, address, reason, message: `${reason} from ${address}` });

test('an attack from one address: the first refusals are events, the rest one summary when the window ends', () => {
  const { l, events, clock } = limiter();
  for (let i = 0; i < 1255; i++) {
    refuse(l, '10.0.0.7', i % 5 === 0 ? 'handshake-timeout' : 'bad-frame');
    clock.t += 10;
  }
  assert.equal(events.length, defaultSecurityEventLimits.eventsPerAddressPerWindow, 'only the first few are events of their own');
  assert.deepEqual(events[0], {
    kind: 'replication-refused', subject: '10.0.0.7', reason: 'handshake-timeout from 10.0.0.7', details: { remote: '10.0.0.7', refusal: 'handshake-timeout' },
  });
  clock.t += defaultSecurityEventLimits.windowMs;
  l.sweep();
  assert.equal(events.length, 6);
  const summary = events[5]!;
  assert.equal(summary.kind, 'replication-refused');
  assert.equal(summary.subject, '10.0.0.7');
  assert.equal(summary.reason, '… and 1,250 more from 10.0.0.7 in the last minute (bad-frame 1,000, handshake-timeout 250)');
  assert.deepEqual(summary.details, { remote: '10.0.0.7', suppressed: 1250, refusals: { 'bad-frame': 1000, 'handshake-timeout': 250 }, windowSeconds: 60 });
  l.sweep();
  assert.equal(events.length, 6, 'a summary is reported once');
});

test('a new window after the old one closed records events again; a quiet window reports nothing', () => {
  const { l, events, clock } = limiter({ windowMs: 2000, eventsPerAddressPerWindow: 2 });
  refuse(l, '192.0.2.1');
  clock.t += 2500;
  l.sweep();
  assert.equal(events.length, 1, 'nothing was suppressed: no summary');
  for (let i = 0; i < 3; i++) refuse(l, '192.0.2.1');
  assert.equal(events.length, 3, 'the new window opens with its own allowance');
  clock.t += 1999;
  l.sweep();
  assert.equal(events.length, 3, 'the window is still open');
  clock.t += 1;
  refuse(l, '192.0.2.1');
  assert.equal(events.length, 5, 'a refusal after the window closes the old one first (summary) and opens a new one');
  assert.equal(events[3]!.reason, '… and 1 more from 192.0.2.1 in the last 2 seconds (bad-frame 1)');
  assert.equal(events[4]!.reason, 'bad-frame from 192.0.2.1');
});

test('addresses and kinds are limited separately; many addresses share a bounded number of events', () => {
  const { l, events, clock } = limiter({ eventsPerAddressPerWindow: 2, eventsPerWindow: 5, addressesPerWindow: 3 });
  for (let i = 0; i < 3; i++) refuse(l, '10.0.0.1');
  for (let i = 0; i < 3; i++) refuse(l, '10.0.0.1', 'access-denied', 'access-denied');
  assert.deepEqual(events.map((e) => e.kind), ['replication-refused', 'replication-refused', 'access-denied', 'access-denied']);
  // A thousand more addresses: one more event (the window's allowance), then counting only.
  for (let i = 0; i < 1000; i++) refuse(l, `10.1.${i >> 8}.${i & 255}`);
  assert.equal(events.length, 5, 'never more events than the window allows');
  clock.t += 60_000;
  l.sweep();
  const summaries = events.slice(5);
  assert.deepEqual(summaries.map((e) => `${e.kind} ${e.subject} ${String(e.details.suppressed)}`).sort(),
    ['access-denied 10.0.0.1 1', 'replication-refused (other addresses) 999', 'replication-refused 10.0.0.1 1']);
  const shared = summaries.find((e) => e.subject === '(other addresses)')!;
  assert.match(shared.reason, /^… and 999 more from addresses beyond the 3 counted one by one in the last minute \(bad-frame 999\)$/);
  assert.equal(shared.details.remote, null);
});

test('flush reports what was suppressed so far; attacker text is clipped; IPv4-mapped addresses are shown as IPv4', () => {
  const { l, events, clock } = limiter({ eventsPerAddressPerWindow: 1, eventsPerWindow: 1 });
  l.record({ kind: 'nbd-refused', address: '::ffff:203.0.113.9', reason: 'unknown-export', message: `no export ${'x'.repeat(5000)}`, subject: 'y'.repeat(5000),
    details: { export: 'z'.repeat(5000), port: 4 } });
  refuse(l, '::ffff:203.0.113.9', 'bad-handshake', 'nbd-refused');
  assert.equal(events.length, 1);
  assert.equal(events[0]!.details.remote, '203.0.113.9');
  assert.equal(events[0]!.reason.length, maxSecurityEventTextChars);
  assert.equal(events[0]!.subject.length, maxSecurityEventTextChars);
  assert.equal((events[0]!.details.export as string).length, maxSecurityEventTextChars);
  assert.equal(events[0]!.details.port, 4);
  clock.t += 3000;
  l.stop();
  assert.equal(events.length, 2);
  assert.equal(events[1]!.reason, '… and 1 more from 203.0.113.9 in the last 3 seconds (bad-handshake 1)');
  assert.equal(normalizeAddress('::1'), '::1');
  assert.equal(normalizeAddress('2001:db8::ffff:1'), '2001:db8::ffff:1');
});

test('limits that make no sense are refused at construction', () => {
  assert.throws(() => limiter({ windowMs: 0 }), /window must be positive/);
  assert.throws(() => limiter({ eventsPerAddressPerWindow: 10, eventsPerWindow: 5 }), /events per address/);
});
