/* placeholder: replaced by the real weirctl */
int main(void)
{
    return 0;
}
