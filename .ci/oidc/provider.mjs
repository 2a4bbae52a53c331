// A local OpenID Connect provider for htpdata's tests: panva's oidc-provider (OpenID Certified),
// over HTTPS, issuing short-lived WLCG-profile JWT access tokens and rotating refresh tokens.
//
//   node provider.mjs CONFIG.json      (written by htpdata.testing.oidc.OIDCProvider)
//
// CONFIG: {port, issuer, cert, key, jwk (private RS256 JWK), client_id, client_secret,
//          redirect_uri, audience, scope, access_ttl, account}
// Logging in needs no form: /interaction/UID logs CONFIG.account in and grants what was asked
// (the test plays a user who always says yes). Everything else is the library's own code.
import fs from 'node:fs';
import https from 'node:https';
import Provider from 'oidc-provider';

const cfg = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));

const provider = new Provider(cfg.issuer, {
  clients: [{
    client_id: cfg.client_id,
    client_secret: cfg.client_secret,
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    redirect_uris: [cfg.redirect_uri],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  jwks: { keys: [cfg.jwk] },
  scopes: ['openid', 'offline_access'],
  pkce: { required: () => false },
  features: {
    devInteractions: { enabled: false },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => cfg.audience,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: cfg.scope,
        audience: cfg.audience,
        accessTokenTTL: cfg.access_ttl,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  // The WLCG token profile: scitokens-cpp refuses a token without wlcg.ver.
  extraTokenClaims: () => ({ 'wlcg.ver': '1.0' }),
  issueRefreshToken: (ctx, client, code) => client.grantTypeAllowed('refresh_token')
    && code.scopes.has('offline_access'),
  rotateRefreshToken: true,
  ttl: { AccessToken: cfg.access_ttl, RefreshToken: 86400, Grant: 86400, Session: 86400,
         Interaction: 600, AuthorizationCode: 60, IdToken: 3600 },
  findAccount: (ctx, id) => ({ accountId: id, claims: () => ({ sub: id }) }),
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
});
provider.proxy = false;

const callback = provider.callback();
const server = https.createServer(
  { cert: fs.readFileSync(cfg.cert), key: fs.readFileSync(cfg.key) },
  async (req, res) => {
    if (req.url.startsWith('/interaction/')) {
      try {
        const details = await provider.interactionDetails(req, res);
        const grant = new provider.Grant({ accountId: cfg.account,
                                           clientId: details.params.client_id });
        grant.addOIDCScope('openid offline_access');
        grant.addResourceScope(cfg.audience, cfg.scope);
        const grantId = await grant.save();
        await provider.interactionFinished(req, res, {
          login: { accountId: cfg.account }, consent: { grantId } },
          { mergeWithLastSubmission: false });
      } catch (err) {
        res.statusCode = 500;
        res.end(String(err));
      }
      return;
    }
    callback(req, res);
  });
server.listen(cfg.port, '127.0.0.1', () => console.log(`listening ${cfg.issuer}`));
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => server.close(() => process.exit(0)));
