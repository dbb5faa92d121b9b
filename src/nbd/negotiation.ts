// Option haggling of the fixed-newstyle handshake, after the client's flags and before
// transmission: each option answered with replies or an error, refusals reported through the host.
// What it settles (structured replies, the selected meta context) is read by the transmission phase.
import type { BlockDevice } from '../volume/block-device';
import * as codec from './codec';
import * as c from './constants';
import type { ConnectionContext } from './connection';
import { type SelectedContext, availableContexts, matchContexts } from './meta-contexts';
import type { ExportLookup, NbdClientInfo, NbdExport, NbdRefusalReason } from './types';

/** What option haggling needs of its connection. */
export interface NegotiationHost {
  readonly client: NbdClientInfo;
  readonly ctx: ConnectionContext;
  isClosed(): boolean;
  write(data: Buffer): void;
  /** Closes the connection for a protocol violation or policy, and reports why. */
  drop(reason: NbdRefusalReason, detail: string, exportName?: string): void;
  /** Reports an option refused by policy (the client got an error reply and may go on). */
  refuse(reason: NbdRefusalReason, detail: string, exportName?: string): void;
  upgradeToTls(option: number): Promise<void>;
  enterTransmission(exp: NbdExport): void;
  endGracefully(): void;
}

export function transmissionFlags(device: BlockDevice, structuredReplies: boolean): number {
  let flags = c.TFLAG_HAS_FLAGS | c.TFLAG_SEND_FLUSH | c.TFLAG_SEND_FUA | c.TFLAG_SEND_TRIM |
    c.TFLAG_SEND_WRITE_ZEROES | c.TFLAG_SEND_FAST_ZERO | c.TFLAG_CAN_MULTI_CONN | c.TFLAG_SEND_CACHE;
  if (device.readOnly) flags |= c.TFLAG_READ_ONLY;
  if (structuredReplies) flags |= c.TFLAG_SEND_DF;
  return flags;
}

export class Negotiation {
  structuredReplies = false;
  /** Export name the last SET_META_CONTEXT referred to, if it selected at least one context. */
  metaContextExport: string | undefined;
  /** The contexts it selected, with their ids. */
  metaContexts: SelectedContext[] = [];

  constructor(private readonly host: NegotiationHost) {}

  /** STARTTLS resets everything negotiated before it. */
  reset(): void {
    this.structuredReplies = false;
    this.metaContextExport = undefined;
    this.metaContexts = [];
  }

  /** The meta context selected for another export than the one attached means nothing. */
  attachedTo(exportName: string): void {
    if (this.metaContextExport !== exportName) {
      this.metaContextExport = undefined;
      this.metaContexts = [];
    }
  }

  /** Returns true when option haggling is over (transmission entered or session ended). */
  async handleOption(option: number, payload: Buffer, noZeroes: boolean): Promise<boolean> {
    const reply = (type: number, data?: Buffer): void => this.host.write(codec.encodeOptionReply(option, type, data));
    const error = (type: number, message: string): void => this.host.write(codec.encodeOptionError(option, type, message));
    const tlsRequiredButMissing = this.host.ctx.tlsMode === 'required' && !this.host.client.tls;

    if (option === c.OPT_ABORT) {
      reply(c.REP_ACK);
      this.host.endGracefully();
      return true;
    }
    if (option === c.OPT_STARTTLS) {
      if (payload.length !== 0) error(c.REP_ERR_INVALID, 'STARTTLS carries no data');
      else if (this.host.ctx.tlsMode === 'off' || !this.host.ctx.tls) error(c.REP_ERR_POLICY, 'TLS is not enabled on this node');
      else if (this.host.client.tls) error(c.REP_ERR_INVALID, 'TLS is already running');
      else {
        await this.host.upgradeToTls(option);
        return this.host.isClosed();
      }
      return false;
    }
    if (this.host.ctx.isShuttingDown()) {
      error(c.REP_ERR_SHUTDOWN, 'the node is shutting down');
      return false;
    }
    if (option === c.OPT_EXPORT_NAME) {
      const name = codec.decodeExportName(payload);
      if (!name.ok) {
        this.host.drop('bad-handshake', name.error);
        return true;
      }
      if (tlsRequiredButMissing) {
        this.host.drop('tls-required', 'EXPORT_NAME without TLS on a node that requires TLS', name.value);
        return true;
      }
      const found = this.host.ctx.provider.lookup(name.value, this.host.client);
      if (found.status !== 'ok') {
        this.host.drop(found.status === 'denied' ? 'access-denied' : 'unknown-export', `EXPORT_NAME ${JSON.stringify(name.value)}: ${found.message}`, name.value);
        return true;
      }
      const flags = transmissionFlags(found.export.device, this.structuredReplies);
      this.host.write(codec.encodeExportNameReply(found.export.device.sizeBytes, flags, noZeroes));
      this.host.enterTransmission(found.export);
      return true;
    }
    if (tlsRequiredButMissing) {
      this.host.refuse('tls-required', `option ${option} without TLS on a node that requires TLS`);
      error(c.REP_ERR_TLS_REQD, 'this node requires TLS: use STARTTLS first');
      return false;
    }
    switch (option) {
      case c.OPT_LIST: {
        if (payload.length !== 0) {
          error(c.REP_ERR_INVALID, 'LIST carries no data');
          return false;
        }
        for (const e of this.host.ctx.provider.list(this.host.client)) reply(c.REP_SERVER, codec.encodeRepServer(e.name, e.description));
        reply(c.REP_ACK);
        return false;
      }
      case c.OPT_STRUCTURED_REPLY: {
        if (payload.length !== 0) {
          error(c.REP_ERR_INVALID, 'STRUCTURED_REPLY carries no data');
          return false;
        }
        this.structuredReplies = true;
        reply(c.REP_ACK);
        return false;
      }
      case c.OPT_LIST_META_CONTEXT:
      case c.OPT_SET_META_CONTEXT:
        this.handleMetaContext(option, payload, reply, error);
        return false;
      case c.OPT_INFO:
      case c.OPT_GO:
        return this.handleInfoOrGo(option, payload, reply, error);
      default:
        error(c.REP_ERR_UNSUP, `option ${option} is not supported`);
        return false;
    }
  }

  private handleInfoOrGo(option: number, payload: Buffer, reply: (type: number, data?: Buffer) => void,
    error: (type: number, message: string) => void): boolean {
    const request = codec.decodeInfoRequest(payload);
    if (!request.ok) {
      error(c.REP_ERR_INVALID, request.error);
      return false;
    }
    const found = this.lookup(request.value.name);
    if (found.status === 'unknown') {
      error(c.REP_ERR_UNKNOWN, found.message);
      return false;
    }
    if (found.status === 'denied') {
      error(c.REP_ERR_POLICY, found.message);
      return false;
    }
    const exp = found.export;
    reply(c.REP_INFO, codec.encodeInfoExport(exp.device.sizeBytes, transmissionFlags(exp.device, this.structuredReplies)));
    const wanted = new Set(request.value.infoTypes);
    if (wanted.has(c.INFO_NAME)) reply(c.REP_INFO, codec.encodeInfoString(c.INFO_NAME, exp.name));
    if (wanted.has(c.INFO_DESCRIPTION)) reply(c.REP_INFO, codec.encodeInfoString(c.INFO_DESCRIPTION, exp.description));
    // Always advertised: it costs nothing and tells every client the limits it must respect.
    reply(c.REP_INFO, codec.encodeInfoBlockSize(this.host.ctx.limits.minBlockBytes,
      Math.max(c.preferredBlockBytes, this.host.ctx.limits.minBlockBytes), c.maxPayloadBytes));
    reply(c.REP_ACK);
    if (option === c.OPT_GO) {
      this.host.enterTransmission(exp);
      return true;
    }
    return false;
  }

  /** An export lookup during option haggling; refusals are reported (the client may go on). */
  private lookup(name: string): ExportLookup {
    const found = this.host.ctx.provider.lookup(name, this.host.client);
    if (found.status !== 'ok') this.host.refuse(found.status === 'denied' ? 'access-denied' : 'unknown-export', found.message, name);
    return found;
  }

  private handleMetaContext(option: number, payload: Buffer, reply: (type: number, data?: Buffer) => void,
    error: (type: number, message: string) => void): void {
    const isSet = option === c.OPT_SET_META_CONTEXT;
    if (isSet) {
      // Replaced even when the request fails.
      this.metaContextExport = undefined;
      this.metaContexts = [];
    }
    if (!this.structuredReplies) {
      error(c.REP_ERR_INVALID, 'negotiate structured replies before meta contexts');
      return;
    }
    const request = codec.decodeMetaContextRequest(payload);
    if (!request.ok) {
      error(c.REP_ERR_INVALID, request.error);
      return;
    }
    const found = this.lookup(request.value.name);
    if (found.status === 'unknown') {
      error(c.REP_ERR_UNKNOWN, found.message);
      return;
    }
    if (found.status === 'denied') {
      error(c.REP_ERR_POLICY, found.message);
      return;
    }
    const matched = matchContexts(availableContexts(found.export.device.metaContexts?.()), request.value.queries, isSet);
    if (!matched.ok) {
      error(c.REP_ERR_INVALID, matched.message);
      return;
    }
    for (const context of matched.contexts) reply(c.REP_META_CONTEXT, codec.encodeRepMetaContext(context.id, context.name));
    if (isSet && matched.contexts.length > 0) {
      this.metaContextExport = request.value.name;
      this.metaContexts = matched.contexts;
    }
    reply(c.REP_ACK);
  }
}
