fn main() {
    println!("prima");
}
