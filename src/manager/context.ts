// What the manager's services share: configuration, the store and its collections, the leader's
// working state (history, alerts, read model), the single writer, leadership, and how to reach a
// node. Built once by manager.ts.
import type { Clock } from '../common/clock';
import type { Logger } from '../common/log';
import type { NodeClient, NodeMonitorClient } from '../contracts/node-client';
import type { AlertBook } from './alerts';
import type { ManagerConfig } from './config';
import type { EventHistory } from './history';
import type { Leadership } from './leadership';
import type { ManagerMetrics } from './metrics';
import type { ClusterModel } from './model';
import type { ManagerStore, StoredNode } from './store/collections';
import type { Webhooks } from './webhooks';
import type { Writer } from './writer';

export interface ManagerContext {
  config: ManagerConfig;
  log: Logger;
  clock: Clock;
  store: ManagerStore;
  history: EventHistory;
  alerts: AlertBook;
  model: ClusterModel;
  writer: Writer;
  webhooks: Webhooks;
  leadership: Leadership;
  metrics: ManagerMetrics;
  /** This manager's own address. */
  url: string;
  managerId(): string;
  /** The token nodes present when they push to this manager. */
  apiToken: string | undefined;
  clientFor(node: Pick<StoredNode, 'url' | 'token'>): NodeClient & NodeMonitorClient;
}
