// Test PKI made with openssl: a CA, a server certificate for 127.0.0.1 and client certificates, laid
// out the way qemu (tls-creds-x509 dir=) and libnbd (tls-certificates=) expect them.
import { X509Certificate } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { runOk } from './tools';

export interface TestPki {
  dir: string;
  caCert: string;
  serverCert: string;
  serverKey: string;
  /** Directory with ca-cert.pem, client-cert.pem, client-key.pem for the named client. */
  clientDir(name: string): string;
}

/** Issues DIR/NAME-cert.pem and DIR/NAME-key.pem, signed by DIR/ca-cert.pem. */
async function issueCert(dir: string, name: string, cn: string, ext: string): Promise<void> {
  const p = (f: string): string => path.join(dir, f);
  await runOk('openssl', ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', p(`${name}-key.pem`)]);
  await runOk('openssl', ['req', '-new', '-key', p(`${name}-key.pem`), '-out', p(`${name}.csr`), '-subj', `/CN=${cn}`]);
  await fsp.writeFile(p(`${name}.ext`), ext);
  await runOk('openssl', ['x509', '-req', '-in', p(`${name}.csr`), '-CA', p('ca-cert.pem'), '-CAkey', p('ca-key.pem'),
    '-CAcreateserial', '-out', p(`${name}-cert.pem`), '-days', '2', '-extfile', p(`${name}.ext`)]);
}

/**
 * A certificate for both ends of a replication link (it serves and dials: serverAuth and clientAuth),
 * for 127.0.0.1, signed by the PKI's CA.
 */
export async function issueLinkCert(pki: TestPki, name: string): Promise<{ cert: string; key: string }> {
  await issueCert(pki.dir, `link-${name}`, name, 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=digitalSignature\n');
  return { cert: path.join(pki.dir, `link-${name}-cert.pem`), key: path.join(pki.dir, `link-${name}-key.pem`) };
}

export async function makePki(dir: string, clients: string[]): Promise<TestPki> {
  await fsp.mkdir(dir, { recursive: true });
  const p = (f: string): string => path.join(dir, f);
  const key = (f: string): Promise<unknown> => runOk('openssl', ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', p(f)]);
  await key('ca-key.pem');
  await runOk('openssl', ['req', '-x509', '-new', '-key', p('ca-key.pem'), '-out', p('ca-cert.pem'), '-days', '2', '-subj', '/CN=tricopy test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  const issue = (name: string, cn: string, ext: string): Promise<void> => issueCert(dir, name, cn, ext);
  await issue('server', 'localhost', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature\n');
  for (const client of clients) {
    await issue(`client-${client}`, client, 'extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature\n');
    const cdir = p(`client-${client}`);
    await fsp.mkdir(cdir, { recursive: true });
    await fsp.copyFile(p('ca-cert.pem'), path.join(cdir, 'ca-cert.pem'));
    await fsp.copyFile(p(`client-${client}-cert.pem`), path.join(cdir, 'client-cert.pem'));
    await fsp.copyFile(p(`client-${client}-key.pem`), path.join(cdir, 'client-key.pem'));
  }
  return {
    dir,
    caCert: p('ca-cert.pem'),
    serverCert: p('server-cert.pem'),
    serverKey: p('server-key.pem'),
    clientDir: (name: string) => p(`client-${name}`),
  };
}

/** The SHA-256 fingerprint of the certificate a TLS listener (a link port) presents to a new connection. */
export function presentedFingerprint(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => {
      const fingerprint = socket.getPeerCertificate().fingerprint256;
      socket.destroy();
      resolve(fingerprint);
    });
    socket.on('error', reject);
  });
}

/** The SHA-256 fingerprint of a PEM certificate file. */
export async function fileFingerprint(file: string): Promise<string> {
  return new X509Certificate(await fsp.readFile(file)).fingerprint256;
}
