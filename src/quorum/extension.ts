// The quorum module as it joins a storage node: quorum pairs (the Fig. 4 overlay on the transition
// engine, reservations, the pair-volume control commands) and their routes on the control API.
import type { FastifyInstance } from 'fastify';
import { TricopyError } from '../common/errors';
import type { NodeExtension, StorageNode } from '../node/node';
import { quorumRoutes } from './api';
import { QuorumVolumes } from './storage';

export class QuorumExtension implements NodeExtension {
  readonly name = 'quorum';
  private volumesValue: QuorumVolumes | undefined;

  get volumes(): QuorumVolumes {
    if (!this.volumesValue) throw new TricopyError('unavailable', 'quorum pairs are not ready on this node yet');
    return this.volumesValue;
  }

  attach(node: StorageNode): void {
    const volumes = new QuorumVolumes(node.replication.extensionPoint(), node.replication, node.store, node.log.child({ component: 'quorum' }));
    node.events.subscribe((event) => {
      if (event.kind === 'volume-deleted') volumes.reservations.forget(event.subject);
    });
    this.volumesValue = volumes;
  }

  routes(app: FastifyInstance): void {
    quorumRoutes(app, () => this.volumes);
  }
}
