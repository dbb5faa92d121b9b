// The states of one volume relocation and the only transitions between them, as one table:
// (state, event) → state. Anything not in the table is a bug (the job asks, the table answers).
export type RelocationState = 'copying' | 'switching' | 'done' | 'failed' | 'interrupted';
export type RelocationEvent = 'copied' | 'switched' | 'error' | 'stopped';

const table: Readonly<Record<RelocationState, Partial<Record<RelocationEvent, RelocationState>>>> = {
  // The background copy runs; host writes to the copied part reach both files.
  copying: { copied: 'switching', error: 'failed', stopped: 'interrupted' },
  // Changes are held for a moment: the target is made durable, committed and put in place.
  switching: { switched: 'done', error: 'failed', stopped: 'interrupted' },
  done: {},
  failed: {},
  interrupted: {},
};

export function nextRelocationState(state: RelocationState, event: RelocationEvent): RelocationState | undefined {
  return table[state][event];
}

/** A relocation in one of these states is over: another may start. */
export function relocationOver(state: RelocationState): boolean {
  return Object.keys(table[state]).length === 0;
}

export const allRelocationStates: readonly RelocationState[] = Object.keys(table) as RelocationState[];
export const allRelocationEvents: readonly RelocationEvent[] = ['copied', 'switched', 'error', 'stopped'];
