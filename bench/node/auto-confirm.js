// PreSignUp module: confirm every user that reaches it.
exports.handler = async (event) => {
  event.response.autoConfirmUser = true;
};
