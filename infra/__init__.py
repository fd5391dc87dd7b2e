"""Infrastructure: the CloudFormation template, applying it, and running the stack locally."""
