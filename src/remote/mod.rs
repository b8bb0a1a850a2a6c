//! The SSH connection to the server, one per run, carrying everything: commands (`exec`),
//! files (`upload`) and TCP tunnels (`tunnel`). `session` opens it; `known_hosts` decides
//! whether the server is the one we think.

mod error;
mod exec;
pub mod known_hosts;
mod session;
mod tunnel;
mod upload;

pub use error::RemoteError;
pub use exec::{shell_quote, ExecOptions, ExecOutput};
pub use session::{Asker, HostKeyNote, HostKeyPolicy, Remote, Target};
pub use tunnel::Tunnel;
pub use upload::{sha256_file, UploadReport, UploadSpec};
