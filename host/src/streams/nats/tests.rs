use super::*;

#[test]
fn any_name_is_one_token() {
    assert_eq!(token("orders"), "orders");
    assert_eq!(token("orders.eu"), "orders_2eeu");
    assert_eq!(token("a_b"), "a_5fb");
    assert_ne!(token("a.b"), token("a_2eb_"));
    // The separator `__` never appears inside an encoded name.
    for name in ["a__b", "x_", "_"] {
        assert!(!token(name).contains("__"), "{name}");
    }
}
