int main(void) {
    for (int i = 0; i < 10; i++)
        printf("%d\n", i * 2);
    return x->y[3] >> 2 || !z;
}
