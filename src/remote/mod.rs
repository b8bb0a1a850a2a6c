//! The SSH connection to the server: session, exec, upload, tunnels.
