// The quorum module as it joins a storage node: quorum pairs (the Fig. 4 overlay on the transition
// engine, reservations, the pair-volume control commands), the node's part in the automatic
// failover of topologies (arbiter agents and the host-write gate), and their control API routes.
import type { FastifyInstance } from 'fastify';
import { TricopyError } from '../common/errors';
import type { NodeExtension, StorageNode } from '../node/node';
import { failoverRoutes, quorumRoutes } from './api';
import { FailoverService } from './failover/service';
import { QuorumVolumes } from './storage';

export class QuorumExtension implements NodeExtension {
  readonly name = 'quorum';
  private volumesValue: QuorumVolumes | undefined;
  private failoverValue: FailoverService | undefined;

  get volumes(): QuorumVolumes {
    if (!this.volumesValue) throw new TricopyError('unavailable', 'quorum pairs are not ready on this node yet');
    return this.volumesValue;
  }

  get failover(): FailoverService {
    if (!this.failoverValue) throw new TricopyError('unavailable', 'automatic failover is not ready on this node yet');
    return this.failoverValue;
  }

  async attach(node: StorageNode): Promise<void> {
    const volumes = new QuorumVolumes(node.replication.extensionPoint(), node.replication, node.store, node.log.child({ component: 'quorum' }));
    node.events.subscribe((event) => {
      if (event.kind === 'volume-deleted') volumes.reservations.forget(event.subject);
    });
    this.volumesValue = volumes;
    const failover = new FailoverService(node, volumes, node.log.child({ component: 'failover' }));
    await failover.start();
    this.failoverValue = failover;
  }

  async stop(): Promise<void> {
    await this.failoverValue?.stop();
  }

  routes(app: FastifyInstance): void {
    quorumRoutes(app, () => this.volumes);
    failoverRoutes(app, () => this.failover);
  }
}
