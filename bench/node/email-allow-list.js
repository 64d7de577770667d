// PreSignUp module: only listed domains may sign up; they are confirmed at once.
const allowed = ['example.com', 'example.org'];

const domainMatches = (domain, listed) => domain === listed || domain.endsWith(`.${listed}`);

exports.handler = async (event) => {
  const email = (event.request.userAttributes || {}).email || '';
  const at = email.lastIndexOf('@');
  if (at < 0) throw new Error('An email address is required to sign up');
  const domain = email.slice(at + 1).toLowerCase();
  if (!allowed.some((listed) => domainMatches(domain, listed))) {
    throw new Error(`Sign-ups from ${domain} are not allowed`);
  }
  event.response.autoConfirmUser = true;
  event.response.autoVerifyEmail = true;
};
