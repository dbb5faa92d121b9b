// The history of a run as the hosts saw it: every write and flush with when it was issued and
// completed (one logical counter orders all of them), where it ran and how it ended. Two writes are
// ordered only when one completed before the other was issued; writes in flight together may land
// in either order. The checker asks it which writes a copy of a volume must hold.

export interface HostWrite {
  id: number;
  volume: string;
  node: string;
  firstSector: number;
  sectors: number;
  issued: number;
  /** Logical completion time; Infinity while in flight (or when its node crashed first). */
  completed: number;
  /** true: acknowledged; false: refused with an error; null: in flight, or lost with its node. */
  ok: boolean | null;
  error?: string;
  atMs: number;
}

export interface HostFlush {
  volume: string;
  node: string;
  issued: number;
  completed: number;
  ok: boolean | null;
}

export class History {
  private tick = 0;
  private nextWriteId = 1;
  readonly writes: HostWrite[] = [];
  readonly flushes: HostFlush[] = [];
  private readonly bySector = new Map<string, HostWrite[][]>();
  /** volume → node → its writes there, in issue order (a flush asks for these only). */
  private readonly byPlace = new Map<string, Map<string, HostWrite[]>>();

  constructor(private readonly sectorsPerVolume: number) {}

  issueWrite(volume: string, node: string, firstSector: number, sectors: number, atMs: number): HostWrite {
    const w: HostWrite = { id: this.nextWriteId++, volume, node, firstSector, sectors, issued: ++this.tick, completed: Number.POSITIVE_INFINITY, ok: null, atMs };
    this.writes.push(w);
    this.at(volume, node).push(w);
    const index = this.index(volume);
    for (let s = firstSector; s < firstSector + sectors; s++) index[s]!.push(w);
    return w;
  }

  complete(w: HostWrite, ok: boolean, error?: string): void {
    w.completed = ++this.tick;
    w.ok = ok;
    if (error !== undefined) w.error = error;
  }

  issueFlush(volume: string, node: string): HostFlush {
    const f: HostFlush = { volume, node, issued: ++this.tick, completed: Number.POSITIVE_INFINITY, ok: null };
    this.flushes.push(f);
    return f;
  }

  completeFlush(f: HostFlush, ok: boolean): void {
    f.completed = ++this.tick;
    f.ok = ok;
  }

  get now(): number {
    return this.tick;
  }

  write(id: number): HostWrite | undefined {
    return this.writes[id - 1];
  }

  /** Writes touching a sector, in issue order. */
  touching(volume: string, sector: number): readonly HostWrite[] {
    return this.index(volume)[sector] ?? [];
  }

  /** a happened before b: a completed before b was issued. */
  static before(a: HostWrite, b: HostWrite): boolean {
    return a.completed < b.issued;
  }

  /** Acknowledged writes of `volume` at `node` completed before logical time `t`. */
  ackedBefore(volume: string, node: string, t: number): HostWrite[] {
    return this.at(volume, node).filter((w) => w.ok === true && w.completed < t);
  }

  private at(volume: string, node: string): HostWrite[] {
    let byNode = this.byPlace.get(volume);
    if (!byNode) {
      byNode = new Map();
      this.byPlace.set(volume, byNode);
    }
    let list = byNode.get(node);
    if (!list) {
      list = [];
      byNode.set(node, list);
    }
    return list;
  }

  private index(volume: string): HostWrite[][] {
    let index = this.bySector.get(volume);
    if (!index) {
      index = Array.from({ length: this.sectorsPerVolume }, () => []);
      this.bySector.set(volume, index);
    }
    return index;
  }
}
