// The bytes of one simulated file view (page cache or durable) as fixed-size pages shared
// copy-on-write between views, so that making a file durable, or restoring the durable view after a
// power loss, moves page references instead of copying the file. A page is written in place only by
// the view that owns it (made it); a page two views share is copied first. Missing pages read as
// zeroes. Pages never change once shared, so a view may also take a page-sized piece of a caller's
// buffer as a page, as long as nobody changes that buffer afterwards. A view also keeps one
// contiguous image of itself for whole-file reads, updated page by page.
import type { Hash } from 'node:crypto';
import { freshBytes } from './fresh-bytes';

export const pageBytes = 4096;

export class PagedBytes {
  private pages: Array<Buffer | undefined> = [];
  /** Pages this view may change in place (it made them and shares them with no other view). */
  private owned: boolean[] = [];
  /** Pages this view replaced since it was last copied or published: where it may differ from the view it publishes to. */
  private changed = new Set<number>();
  /** The bytes made contiguous by the last image() call, while nothing changed since (undefined once something did). */
  private cachedImage: Buffer | undefined;
  /** The buffer of the last image, reused for the next one. */
  private imageBuffer: Buffer | undefined;
  /** Pages replaced since the last image (only those are copied into the buffer again). */
  private sinceImage = new Set<number>();

  /** Writes `bytes` at `position`. `bytes` must not change afterwards (whole pages of it may be kept). */
  write(position: number, bytes: Buffer): void {
    this.cachedImage = undefined;
    let at = 0;
    while (at < bytes.length) {
      const i = Math.floor((position + at) / pageBytes);
      const offset = position + at - i * pageBytes;
      const n = Math.min(pageBytes - offset, bytes.length - at);
      if (n === pageBytes) {
        this.pages[i] = bytes.subarray(at, at + n);
        this.owned[i] = false;
        this.replaced(i);
      } else {
        bytes.copy(this.writable(i), offset, at, at + n);
      }
      at += n;
    }
  }

  /** Sets the bytes in [from, to) to zero. */
  zero(from: number, to: number): void {
    this.cachedImage = undefined;
    for (let at = from; at < to;) {
      const i = Math.floor(at / pageBytes);
      const offset = at - i * pageBytes;
      const n = Math.min(pageBytes - offset, to - at);
      if (this.pages[i]) {
        if (n === pageBytes) {
          this.pages[i] = undefined;
          this.owned[i] = false;
          this.replaced(i);
        } else {
          this.writable(i).fill(0, offset, offset + n);
        }
      }
      at += n;
    }
  }

  /** Copies the bytes in [from, to) into `target` at `targetOffset`. */
  copyOut(target: Buffer, targetOffset: number, from: number, to: number): void {
    for (let at = from; at < to;) {
      const i = Math.floor(at / pageBytes);
      const offset = at - i * pageBytes;
      const n = Math.min(pageBytes - offset, to - at);
      const page = this.pages[i];
      const into = targetOffset + at - from;
      if (page) page.copy(target, into, offset, offset + n);
      else target.fill(0, into, into + n);
      at += n;
    }
  }

  /**
   * The first `length` bytes as one buffer, which the caller must not change and may use only until
   * this view next changes: the buffer is reused, and only the pages replaced since the last image
   * are copied into it again (the checker reads whole volumes at every checkpoint).
   */
  image(length: number): Buffer {
    if (this.cachedImage?.length === length) return this.cachedImage;
    if (this.imageBuffer?.length !== length) {
      this.imageBuffer = Buffer.allocUnsafeSlow(length);
      this.copyOut(this.imageBuffer, 0, 0, length);
    } else {
      for (const i of this.sinceImage) if (i * pageBytes < length) this.copyOut(this.imageBuffer, i * pageBytes, i * pageBytes, Math.min(length, (i + 1) * pageBytes));
    }
    this.sinceImage.clear();
    this.cachedImage = this.imageBuffer;
    return this.cachedImage;
  }

  /**
   * Feeds the first `length` bytes into `hash` (a run's fingerprint): each page's bytes, a page never
   * written as a short mark (which pages exist follows from the writes, so equal runs mark the same).
   */
  digestInto(hash: Hash, length: number): void {
    for (let i = 0; i * pageBytes < length; i++) {
      const n = Math.min(pageBytes, length - i * pageBytes);
      const page = this.pages[i];
      if (page) hash.update(page.subarray(0, n));
      else hash.update(`-${n}`);
    }
  }

  /** A new view with the same bytes (sharing every page). */
  copy(): PagedBytes {
    const other = new PagedBytes();
    other.pages = this.pages.slice();
    this.owned = [];
    this.changed.clear();
    return other;
  }

  /**
   * Makes `other` hold the same bytes as this view, when it already does except at the pages this
   * view changed since it was copied from `other` (or `other` from it) or last published to it.
   */
  publishTo(other: PagedBytes): void {
    if (this.changed.size > 0) other.cachedImage = undefined;
    for (const i of this.changed) {
      other.pages[i] = this.pages[i];
      other.owned[i] = false;
      if (other.imageBuffer) other.sinceImage.add(i);
      this.owned[i] = false;
    }
    this.changed.clear();
  }

  private writable(i: number): Buffer {
    let page = this.pages[i];
    if (!page || !this.owned[i]) {
      const mine = freshBytes(pageBytes);
      if (page) page.copy(mine);
      else mine.fill(0);
      this.pages[i] = page = mine;
      this.owned[i] = true;
    }
    this.replaced(i);
    return page;
  }

  private replaced(i: number): void {
    this.changed.add(i);
    if (this.imageBuffer) this.sinceImage.add(i);
  }
}
