//! The seed's `support.js` as a worker component: report which child this is.
fn main() {
    let i = std::env::args().nth(1).unwrap_or_default();
    println!("Child Process {i} executed.");
}
