"""Operations that combine the components: rename (mover) and rm (remover)."""
