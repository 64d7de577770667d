// PreSignUp: refuses sign-ups whose email address is in a listed domain
// (or a subdomain of one), the deny list of plugins/email-deny-list written
// as a Lambda handler, in the style of Amplify's email-filter-denylist
// template. The domains come from `process.env.DOMAINS`, which lambda.mjs
// maps to the plugin's config key `domains` in tenant.toml.

export const handler = async (event) => {
  const denied = (process.env.DOMAINS ?? '')
    .split(',')
    .map((d) => d.trim().replace(/^@/, '').toLowerCase())
    .filter((d) => d !== '');
  if (denied.length === 0) {
    throw new Error(
      "the plugin's config has no `domains`: set it under [plugins.<file stem>.config] in tenant.toml",
    );
  }

  const email = (event.request.userAttributes.email ?? '').trim();
  const at = email.lastIndexOf('@');
  const domain = at < 0 ? '' : email.substring(at + 1).toLowerCase();
  if (domain === '') {
    return event;
  }

  const listed = denied.find((d) => domain === d || domain.endsWith(`.${d}`));
  if (listed !== undefined) {
    console.info(`refused a sign-up from ${domain} (listed as ${listed})`);
    throw new Error(`Sign-ups from ${domain} are not allowed`);
  }
  return event;
};
