// PreSignUp module: refuse sign-ups from listed domains (as the Amplify
// template does, with the domains of the benchmark's tenant).
const denied = ['spam.test', 'throwaway.test'];

const domainMatches = (domain, listed) => domain === listed || domain.endsWith(`.${listed}`);

exports.handler = async (event) => {
  const email = (event.request.userAttributes || {}).email || '';
  const at = email.lastIndexOf('@');
  if (at < 0) return;
  const domain = email.slice(at + 1).toLowerCase();
  if (denied.some((listed) => domainMatches(domain, listed))) {
    throw new Error(`Sign-ups from ${domain} are not allowed`);
  }
};
