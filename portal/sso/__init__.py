"""Enterprise sign-in with OpenID Connect: IdPs from the environment, links, back-channel logout."""
