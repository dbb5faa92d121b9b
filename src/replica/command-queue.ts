// Serializes commands per key (a pair, a volume): a command on a key starts after the previous one
// on that key settled, whatever its outcome; commands on several keys take them in sorted order so
// two of them never wait on each other.
export class CommandQueue {
  private readonly tails = new Map<string, Promise<unknown>>();

  run<T>(key: string, op: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    const result = previous.then(op, op);
    const tail = result.catch(() => undefined);
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return result;
  }

  runAll<T>(keys: string[], op: () => Promise<T>): Promise<T> {
    const sorted = [...new Set(keys)].sort();
    const step = (i: number): Promise<T> => (i === sorted.length ? op() : this.run(sorted[i]!, () => step(i + 1)));
    return step(0);
  }
}
