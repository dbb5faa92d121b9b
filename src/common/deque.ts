// A FIFO with O(1) push, shift and indexed access: an array with a moving head, compacted now and
// then. Journals keep thousands of entries in order and drop them from the front.

export class Deque<T> {
  private items: T[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  at(index: number): T | undefined {
    return this.items[this.head + index];
  }

  first(): T | undefined {
    return this.items[this.head];
  }

  last(): T | undefined {
    return this.length > 0 ? this.items[this.items.length - 1] : undefined;
  }

  push(item: T): void {
    this.items.push(item);
  }

  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const item = this.items[this.head]!;
    this.head++;
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }

  clear(): T[] {
    const all = this.toArray();
    this.items = [];
    this.head = 0;
    return all;
  }

  toArray(): T[] {
    return this.items.slice(this.head);
  }

  /** Index of the first item for which `below` is false (items are sorted by it). */
  lowerBound(below: (item: T) => boolean): number {
    let lo = 0;
    let hi = this.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (below(this.items[this.head + mid]!)) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}
