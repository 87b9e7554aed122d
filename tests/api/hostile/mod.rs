//! A hostile tenant on a shared server: every attack is refused with a 4xx or absorbed, and no
//! other tenant notices.

mod inputs;
mod jobs;
mod landing;
